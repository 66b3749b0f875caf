/* nnc portable CMSIS-NN subset: s8 depthwise convolution (channel multiplier, stride, padding,
 * dilation). The real wrapper dispatches to 3x3 / channel-blocked kernels with this same result. */
#include "arm_nnfunctions.h"
#include "arm_nnsupportfunctions.h"

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
                                                  int8_t *output_data)
{
    (void)ctx;
    (void)bias_dims;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t ch_mult = dw_conv_params->ch_mult;
    const int32_t stride_h = dw_conv_params->stride.h, stride_w = dw_conv_params->stride.w;
    /* a zero dilation (left unset by older callers, whose CMSIS-NN ignored it) means 1 */
    const int32_t dil_h = dw_conv_params->dilation.h > 0 ? dw_conv_params->dilation.h : 1;
    const int32_t dil_w = dw_conv_params->dilation.w > 0 ? dw_conv_params->dilation.w : 1;
    const int32_t in_off = dw_conv_params->input_offset, out_off = dw_conv_params->output_offset;
    const int32_t act_min = dw_conv_params->activation.min, act_max = dw_conv_params->activation.max;

    if (ch_mult <= 0 || out_c != in_c * ch_mult || filter_dims->c != out_c || stride_h <= 0 ||
        stride_w <= 0) {
        return ARM_CMSIS_NN_ARG_ERROR;
    }

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in_batch = input_data + (ptrdiff_t)b * in_h * in_w * in_c;
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * stride_h - dw_conv_params->padding.h;
            int32_t ky0, ky1;
            arm_nn_tap_range(y0, k_h, dil_h, in_h, &ky0, &ky1);
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * stride_w - dw_conv_params->padding.w;
                int32_t kx0, kx1;
                arm_nn_tap_range(x0, k_w, dil_w, in_w, &kx0, &kx1);
                for (int32_t oc = 0; oc < out_c; oc++) {
                    const int32_t ic = oc / ch_mult;
                    int32_t acc = bias_data != NULL ? bias_data[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const int32_t iy = y0 + ky * dil_h;
                        const int8_t *in_row = in_batch + (ptrdiff_t)iy * in_w * in_c + ic;
                        const int8_t *w_row = filter_data + (ptrdiff_t)ky * k_w * out_c + oc;
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const int32_t ix = x0 + kx * dil_w;
                            acc += ((int32_t)in_row[(ptrdiff_t)ix * in_c] + in_off) *
                                   (int32_t)w_row[(ptrdiff_t)kx * out_c];
                        }
                    }
                    acc = arm_nn_requantize(acc, quant_params->multiplier[oc], quant_params->shift[oc]);
                    acc = arm_nn_clamp(acc + out_off, act_min, act_max);
                    *output_data++ = (int8_t)acc;
                }
            }
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}
