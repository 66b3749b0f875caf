/* nnc portable CMSIS-NN subset: s8 convolution (any kernel, stride, padding, dilation, groups).
 * The real wrapper dispatches to 1x1 / 1xN / im2col kernels that all compute this same result. */
#include "arm_nnfunctions.h"
#include "arm_nnsupportfunctions.h"

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
                                            int8_t *output_data)
{
    (void)ctx;
    (void)bias_dims;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w, k_c = filter_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t stride_h = conv_params->stride.h, stride_w = conv_params->stride.w;
    const int32_t dil_h = conv_params->dilation.h, dil_w = conv_params->dilation.w;
    const int32_t in_off = conv_params->input_offset, out_off = conv_params->output_offset;
    const int32_t act_min = conv_params->activation.min, act_max = conv_params->activation.max;

    if (k_c <= 0 || in_c % k_c != 0 || stride_h <= 0 || stride_w <= 0 || dil_h <= 0 || dil_w <= 0) {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const int32_t groups = in_c / k_c;
    if (out_c % groups != 0 || filter_dims->n != out_c) {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const int32_t out_per_group = out_c / groups;

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in_batch = input_data + (ptrdiff_t)b * in_h * in_w * in_c;
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * stride_h - conv_params->padding.h;
            int32_t ky0, ky1;
            arm_nn_tap_range(y0, k_h, dil_h, in_h, &ky0, &ky1);
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * stride_w - conv_params->padding.w;
                int32_t kx0, kx1;
                arm_nn_tap_range(x0, k_w, dil_w, in_w, &kx0, &kx1);
                for (int32_t oc = 0; oc < out_c; oc++) {
                    const int32_t ic0 = (oc / out_per_group) * k_c;
                    int32_t acc = bias_data != NULL ? bias_data[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const int32_t iy = y0 + ky * dil_h;
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const int32_t ix = x0 + kx * dil_w;
                            const int8_t *in = in_batch + ((ptrdiff_t)iy * in_w + ix) * in_c + ic0;
                            const int8_t *w = filter_data + (((ptrdiff_t)oc * k_h + ky) * k_w + kx) * k_c;
                            for (int32_t i = 0; i < k_c; i++) {
                                acc += ((int32_t)in[i] + in_off) * (int32_t)w[i];
                            }
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
