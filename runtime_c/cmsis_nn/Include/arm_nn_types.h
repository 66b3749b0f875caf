/* nnc portable CMSIS-NN subset: the public structs and status codes of the s8 API.
 * Same names, members and member order as CMSIS-NN's arm_nn_types.h so calls written against one
 * compile against the other. An independent implementation from the public API documentation. */
#ifndef ARM_NN_TYPES_H
#define ARM_NN_TYPES_H

#include <stdint.h>

/** Function return codes. */
typedef enum {
    ARM_CMSIS_NN_SUCCESS = 0,        /**< no error */
    ARM_CMSIS_NN_ARG_ERROR = -1,     /**< one or more arguments are incorrect */
    ARM_CMSIS_NN_NO_IMPL_ERROR = -2, /**< no implementation for these arguments */
    ARM_CMSIS_NN_FAILURE = -3        /**< logical error */
} arm_cmsis_nn_status;

/** Width and height of a stride, padding or dilation. */
typedef struct {
    int32_t w;
    int32_t h;
} cmsis_nn_tile;

/** Scratch buffer handed to a kernel; size it with the kernel's *_get_buffer_size(). */
typedef struct {
    void *buf;
    int32_t size;
} cmsis_nn_context;

/** Tensor extents. `n` is the batch, or the output channels of a conv filter. */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} cmsis_nn_dims;

/** Per output channel requantization: `multiplier[i]`, `shift[i]` (TFLite QuantizeMultiplier). */
typedef struct {
    int32_t *multiplier;
    int32_t *shift;
} cmsis_nn_per_channel_quant_params;

/** Per tensor requantization. */
typedef struct {
    int32_t multiplier;
    int32_t shift;
} cmsis_nn_per_tensor_quant_params;

/** Output clamp (fused ReLU/ReLU6 or the int8 range). */
typedef struct {
    int32_t min;
    int32_t max;
} cmsis_nn_activation;

/** Convolution: input_offset = -input zero point, output_offset = +output zero point. */
typedef struct {
    int32_t input_offset;
    int32_t output_offset;
    cmsis_nn_tile stride;
    cmsis_nn_tile padding;
    cmsis_nn_tile dilation;
    cmsis_nn_activation activation;
} cmsis_nn_conv_params;

/** Depthwise convolution; out channels = ch_mult * in channels. */
typedef struct {
    int32_t input_offset;
    int32_t output_offset;
    int32_t ch_mult;
    cmsis_nn_tile stride;
    cmsis_nn_tile padding;
    cmsis_nn_tile dilation;
    cmsis_nn_activation activation;
} cmsis_nn_dw_conv_params;

/** Max/average pooling. */
typedef struct {
    cmsis_nn_tile stride;
    cmsis_nn_tile padding;
    cmsis_nn_activation activation;
} cmsis_nn_pool_params;

/** Fully connected: input_offset = -input zp, filter_offset = -filter zp, output_offset = +out zp. */
typedef struct {
    int32_t input_offset;
    int32_t filter_offset;
    int32_t output_offset;
    cmsis_nn_activation activation;
} cmsis_nn_fc_params;

#endif /* ARM_NN_TYPES_H */
