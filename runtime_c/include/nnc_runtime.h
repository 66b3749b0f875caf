/* nnc runtime: the types every generated model shares. C99, no allocation, no libc beyond stdint. */
#ifndef NNC_RUNTIME_H
#define NNC_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types; the codes are ONNX TensorProto.DataType values so tools can share them. */
enum {
    NNC_FLOAT32 = 1,
    NNC_UINT8 = 2,
    NNC_INT8 = 3,
    NNC_UINT16 = 4,
    NNC_INT16 = 5,
    NNC_INT32 = 6,
    NNC_INT64 = 7,
    NNC_BOOL = 9, /* stored as one byte, 0 or 1 */
    NNC_FLOAT16 = 10, /* IEEE half, stored as nnc_f16 */
    NNC_FLOAT64 = 11,
    NNC_UINT32 = 12,
    NNC_UINT64 = 13
};

/* Half-precision storage: C23/GCC _Float16 where the compiler has it, else clang/ARM __fp16
 * (storage only; both convert to float for arithmetic). Models with float16 tensors need one. */
#if defined(__FLT16_MAX__)
typedef _Float16 nnc_f16;
#define NNC_F16(x) ((nnc_f16)(x))
#define NNC_HAS_F16 1
#elif defined(__clang__) || defined(__ARM_FP16_FORMAT_IEEE)
typedef __fp16 nnc_f16;
/* clang <= 14 converts double to __fp16 through a libcall whose ABI does not match libgcc's on
 * x86, so convert through float (on x86 this needs F16C, e.g. -march=native) */
#define NNC_F16(x) ((nnc_f16)(float)(x))
#define NNC_HAS_F16 1
#endif

/* One model input or output. Field order keeps the struct free of padding on LP64 and ILP32. */
typedef struct nnc_tensor_desc {
    const char *name;     /* the user-facing (ONNX) name */
    const int64_t *shape; /* `rank` extents, NULL for a scalar */
    int32_t rank;
    int32_t dtype;        /* NNC_FLOAT32, ... */
    uint64_t nbytes;
} nnc_tensor_desc;

/* One generated kernel, in execution order (for per-layer profiling). */
typedef struct nnc_layer_desc {
    const char *name;    /* kernel function name */
    const char *op_kind; /* graph op kind(s) it came from */
    const char *op_name;
    uint64_t macs;       /* multiply-accumulates, 0 when not meaningful */
} nnc_layer_desc;

/* Static buffers (arena, weights) are aligned so vector loads never straddle cache lines badly. */
#if defined(__GNUC__) || defined(__clang__)
#define NNC_ALIGN(n) __attribute__((aligned(n)))
#else
#define NNC_ALIGN(n)
#endif

/* Every generated kernel is opaque to the compiler's interprocedural analysis. GCC 12.2 (at least
 * arm-none-eabi; -O2 and up) deletes calls to a kernel it wrongly finds `const`: IPA-CP clones it
 * with constant arena pointers, IV-opts then addresses one buffer as MEM[0B + integer], and
 * ipa-pure-const reads that as a NULL dereference that ends the block, so the store after it is
 * never seen. `noipa` cuts every link of that chain; a kernel call costs a few instructions.
 * Reproducer and analysis: docs/gcc-pure-const-bug.md. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define NNC_KERNEL __attribute__((noipa))
#elif defined(__GNUC__) && !defined(__clang__)
#define NNC_KERNEL __attribute__((noinline, noclone))
#else
#define NNC_KERNEL
#endif

/* Loop hints. `vectorized` loops are free of loop-carried memory dependences (the scheduler
 * guarantees it), which `GCC ivdep` asserts; scalar reductions stay correct because ivdep only
 * concerns memory. Clang warns when a requested vectorization fails, so it gets no hint. */
#define NNC_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define NNC_VECTORIZE
#define NNC_UNROLL(n) NNC_PRAGMA(unroll n)
#elif defined(__GNUC__) && __GNUC__ >= 8
#define NNC_VECTORIZE NNC_PRAGMA(GCC ivdep)
#define NNC_UNROLL(n) NNC_PRAGMA(GCC unroll n)
#else
#define NNC_VECTORIZE
#define NNC_UNROLL(n)
#endif

#ifdef __cplusplus
}
#endif

#endif /* NNC_RUNTIME_H */
