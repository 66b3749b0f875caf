/* nnc portable CMSIS-NN subset: the s8 functions nnc calls, with CMSIS-NN's names and signatures.
 *
 * Plain C99, NHWC, bit-exact with the TFLite (Micro) int8 reference kernels: int32 accumulation,
 * requantization by a saturating rounding doubling high multiply and a rounding right shift
 * (TFLite MultiplyByQuantizedMultiplier), then the output offset and the activation clamp.
 * An independent implementation written from the public CMSIS-NN API documentation; see README.md.
 *
 * Conventions shared by every function:
 *   - input_offset is the negated input zero point, output_offset the output zero point;
 *   - per-channel multiplier/shift come from TFLite QuantizeMultiplier (shift > 0 shifts left);
 *   - bias pointers may be NULL (no bias);
 *   - ctx may be NULL or carry a buffer of *_get_buffer_size() bytes. These kernels need no scratch,
 *     but the getters report what the real library needs on the compiled-for core (see README.md)
 *     so an arena planned against this library also fits a real CMSIS-NN build.
 */
#ifndef ARM_NNFUNCTIONS_H
#define ARM_NNFUNCTIONS_H

#include "arm_nn_math_types.h"
#include "arm_nn_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Convolution ------------------------------------------------------------------------------
 * input_dims [N, H, W, C_IN], filter_dims [C_OUT, KH, KW, C_IN / groups], bias [C_OUT] int32,
 * output_dims [N, OH, OW, C_OUT]. Grouped convolution when input_dims->c is a multiple
 * (> 1) of filter_dims->c. Padding is implicit: taps outside the input contribute nothing. */
arm_cmsis_nn_status arm_convolve_wrapper_s8(const cmsis_nn_context *ctx,
                                            const cmsis_nn_conv_params *conv_params,
                                            const cmsis_nn_per_channel_quant_params *quant_params,
                                            const cmsis_nn_dims *input_dims,
                                            const int8_t *input_data,
                                            const cmsis_nn_dims *filter_dims,
                                            const int8_t *filter_data,
                                            const cmsis_nn_dims *bias_dims,
                                            const int32_t *bias_data,
                                            const cmsis_nn_dims *output_dims,
                                            int8_t *output_data);

int32_t arm_convolve_wrapper_s8_get_buffer_size(const cmsis_nn_conv_params *conv_params,
                                                const cmsis_nn_dims *input_dims,
                                                const cmsis_nn_dims *filter_dims,
                                                const cmsis_nn_dims *output_dims);
int32_t arm_convolve_wrapper_s8_get_buffer_size_dsp(const cmsis_nn_conv_params *conv_params,
                                                    const cmsis_nn_dims *input_dims,
                                                    const cmsis_nn_dims *filter_dims,
                                                    const cmsis_nn_dims *output_dims);
int32_t arm_convolve_wrapper_s8_get_buffer_size_mve(const cmsis_nn_conv_params *conv_params,
                                                    const cmsis_nn_dims *input_dims,
                                                    const cmsis_nn_dims *filter_dims,
                                                    const cmsis_nn_dims *output_dims);

/* ---- Depthwise convolution ----------------------------------------------------------------------
 * input_dims [N, H, W, C_IN], filter_dims [1, KH, KW, C_OUT] with C_OUT = C_IN * ch_mult,
 * output channel ic * ch_mult + m reads input channel ic. Dilation is supported. */
arm_cmsis_nn_status arm_depthwise_conv_wrapper_s8(const cmsis_nn_context *ctx,
                                                  const cmsis_nn_dw_conv_params *dw_conv_params,
                                                  const cmsis_nn_per_channel_quant_params *quant_params,
                                                  const cmsis_nn_dims *input_dims,
                                                  const int8_t *input_data,
                                                  const cmsis_nn_dims *filter_dims,
                                                  const int8_t *filter_data,
                                                  const cmsis_nn_dims *bias_dims,
                                                  const int32_t *bias_data,
                                                  const cmsis_nn_dims *output_dims,
                                                  int8_t *output_data);

int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                      const cmsis_nn_dims *input_dims,
                                                      const cmsis_nn_dims *filter_dims,
                                                      const cmsis_nn_dims *output_dims);
int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                          const cmsis_nn_dims *input_dims,
                                                          const cmsis_nn_dims *filter_dims,
                                                          const cmsis_nn_dims *output_dims);
int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size_mve(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                          const cmsis_nn_dims *input_dims,
                                                          const cmsis_nn_dims *filter_dims,
                                                          const cmsis_nn_dims *output_dims);

/* ---- Fully connected ----------------------------------------------------------------------------
 * input_dims [N, H, W, C] read as N rows of H*W*C; filter_dims n = accumulation depth (H*W*C),
 * c = output depth; filter data is [C_OUT][depth] row-major; output_dims [N, C_OUT]. */
arm_cmsis_nn_status arm_fully_connected_s8(const cmsis_nn_context *ctx,
                                           const cmsis_nn_fc_params *fc_params,
                                           const cmsis_nn_per_tensor_quant_params *quant_params,
                                           const cmsis_nn_dims *input_dims,
                                           const int8_t *input_data,
                                           const cmsis_nn_dims *filter_dims,
                                           const int8_t *filter_data,
                                           const cmsis_nn_dims *bias_dims,
                                           const int32_t *bias_data,
                                           const cmsis_nn_dims *output_dims,
                                           int8_t *output_data);

/** As arm_fully_connected_s8 with one multiplier/shift per output channel. */
arm_cmsis_nn_status arm_fully_connected_per_channel_s8(const cmsis_nn_context *ctx,
                                                       const cmsis_nn_fc_params *fc_params,
                                                       const cmsis_nn_per_channel_quant_params *quant_params,
                                                       const cmsis_nn_dims *input_dims,
                                                       const int8_t *input_data,
                                                       const cmsis_nn_dims *filter_dims,
                                                       const int8_t *filter_data,
                                                       const cmsis_nn_dims *bias_dims,
                                                       const int32_t *bias_data,
                                                       const cmsis_nn_dims *output_dims,
                                                       int8_t *output_data);

/** Row sums of a [vector_rows][vector_cols] int8 matrix, each element plus rhs_offset, times
 * lhs_offset, plus bias_data[row] when bias_data is not NULL (the kernel sums Helium builds of
 * CMSIS-NN keep in the FC context buffer; lhs_offset = input offset, rhs_offset = filter offset).
 * The 7-argument form of CMSIS-NN v7.0.0 and later. */
arm_cmsis_nn_status arm_vector_sum_s8(int32_t *vector_sum_buf,
                                      const int32_t vector_cols,
                                      const int32_t vector_rows,
                                      const int8_t *vector_data,
                                      const int32_t lhs_offset,
                                      const int32_t rhs_offset,
                                      const int32_t *bias_data);

int32_t arm_fully_connected_s8_get_buffer_size(const cmsis_nn_dims *filter_dims);
int32_t arm_fully_connected_s8_get_buffer_size_dsp(const cmsis_nn_dims *filter_dims);
int32_t arm_fully_connected_s8_get_buffer_size_mve(const cmsis_nn_dims *filter_dims);

/* ---- Pooling --------------------------------------------------------------------------------------
 * input_dims [N, H, W, C], filter_dims h/w = window, output_dims [N, OH, OW, C]. Windows cover only
 * the taps inside the input (padding is excluded from the max and from the average's count). */
arm_cmsis_nn_status arm_max_pool_s8(const cmsis_nn_context *ctx,
                                    const cmsis_nn_pool_params *pool_params,
                                    const cmsis_nn_dims *input_dims,
                                    const int8_t *input_data,
                                    const cmsis_nn_dims *filter_dims,
                                    const cmsis_nn_dims *output_dims,
                                    int8_t *output_data);

/** Average rounds half away from zero, as TFLite's reference kernel. */
arm_cmsis_nn_status arm_avgpool_s8(const cmsis_nn_context *ctx,
                                   const cmsis_nn_pool_params *pool_params,
                                   const cmsis_nn_dims *input_dims,
                                   const int8_t *input_data,
                                   const cmsis_nn_dims *filter_dims,
                                   const cmsis_nn_dims *output_dims,
                                   int8_t *output_data);

int32_t arm_avgpool_s8_get_buffer_size(const int dim_dst_width, const int ch_src);
int32_t arm_avgpool_s8_get_buffer_size_dsp(const int dim_dst_width, const int ch_src);
int32_t arm_avgpool_s8_get_buffer_size_mve(const int dim_dst_width, const int ch_src);

/* ---- Softmax --------------------------------------------------------------------------------------
 * Softmax over each of num_rows rows of row_size int8 values; output scale 1/256, zero point -128.
 * mult/shift scale (x - max) * beta * input_scale into gemmlowp Q5.26 (TFLite
 * PreprocessSoftmaxScaling with 5 integer bits, shift in [0, 31]); entries with x - max < diff_min
 * (TFLite -CalculateInputRadius) output -128. */
void arm_softmax_s8(const int8_t *input,
                    const int32_t num_rows,
                    const int32_t row_size,
                    const int32_t mult,
                    const int32_t shift,
                    const int32_t diff_min,
                    int8_t *output);

/* ---- Elementwise ----------------------------------------------------------------------------------
 * block_size elements, no broadcasting. Add follows TFLite: both inputs offset, shifted left by
 * left_shift, requantized to a common scale, summed, requantized to the output. */
arm_cmsis_nn_status arm_elementwise_add_s8(const int8_t *input_1_vect,
                                           const int8_t *input_2_vect,
                                           const int32_t input_1_offset,
                                           const int32_t input_1_mult,
                                           const int32_t input_1_shift,
                                           const int32_t input_2_offset,
                                           const int32_t input_2_mult,
                                           const int32_t input_2_shift,
                                           const int32_t left_shift,
                                           int8_t *output,
                                           const int32_t out_offset,
                                           const int32_t out_mult,
                                           const int32_t out_shift,
                                           const int32_t out_activation_min,
                                           const int32_t out_activation_max,
                                           const int32_t block_size);

arm_cmsis_nn_status arm_elementwise_mul_s8(const int8_t *input_1_vect,
                                           const int8_t *input_2_vect,
                                           const int32_t input_1_offset,
                                           const int32_t input_2_offset,
                                           int8_t *output,
                                           const int32_t out_offset,
                                           const int32_t out_mult,
                                           const int32_t out_shift,
                                           const int32_t out_activation_min,
                                           const int32_t out_activation_max,
                                           const int32_t block_size);

#ifdef __cplusplus
}
#endif

#endif /* ARM_NNFUNCTIONS_H */
