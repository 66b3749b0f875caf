/* nnc portable CMSIS-NN subset: basic types, limits and the feature macros the library keys on.
 * An independent implementation written from the public CMSIS-NN API documentation. */
#ifndef ARM_NN_MATH_TYPES_H
#define ARM_NN_MATH_TYPES_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The real library selects its DSP (Cortex-M4/M7) or MVE (Cortex-M55/M85) code paths from these;
 * here they only choose which scratch sizes the generic *_get_buffer_size functions report. */
#if defined(__ARM_FEATURE_DSP) && (__ARM_FEATURE_DSP == 1) && !defined(ARM_MATH_DSP)
#define ARM_MATH_DSP 1
#endif
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && !defined(ARM_MATH_MVEI)
#define ARM_MATH_MVEI 1
#endif

#define NN_Q31_MAX ((int32_t)INT32_MAX)
#define NN_Q31_MIN ((int32_t)INT32_MIN)
#define NN_Q15_MAX ((int16_t)INT16_MAX)
#define NN_Q15_MIN ((int16_t)INT16_MIN)
#define NN_Q7_MAX ((int8_t)INT8_MAX)
#define NN_Q7_MIN ((int8_t)INT8_MIN)

#endif /* ARM_NN_MATH_TYPES_H */
