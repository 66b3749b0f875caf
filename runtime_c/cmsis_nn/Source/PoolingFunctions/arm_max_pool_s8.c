/* nnc portable CMSIS-NN subset: s8 max pooling over the window taps inside the input. */
#include "arm_nnfunctions.h"
#include "arm_nnsupportfunctions.h"

arm_cmsis_nn_status arm_max_pool_s8(const cmsis_nn_context *ctx,
                                    const cmsis_nn_pool_params *pool_params,
                                    const cmsis_nn_dims *input_dims,
                                    const int8_t *input_data,
                                    const cmsis_nn_dims *filter_dims,
                                    const cmsis_nn_dims *output_dims,
                                    int8_t *output_data)
{
    (void)ctx;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, ch = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t act_min = pool_params->activation.min, act_max = pool_params->activation.max;

    if (output_dims->c != ch || pool_params->stride.h <= 0 || pool_params->stride.w <= 0) {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in_batch = input_data + (ptrdiff_t)b * in_h * in_w * ch;
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * pool_params->stride.h - pool_params->padding.h;
            int32_t ky0, ky1;
            arm_nn_tap_range(y0, filter_dims->h, 1, in_h, &ky0, &ky1);
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * pool_params->stride.w - pool_params->padding.w;
                int32_t kx0, kx1;
                arm_nn_tap_range(x0, filter_dims->w, 1, in_w, &kx0, &kx1);
                for (int32_t c = 0; c < ch; c++) {
                    int32_t max = INT8_MIN;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const int8_t *row = in_batch + ((ptrdiff_t)(y0 + ky) * in_w + x0) * ch + c;
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const int32_t v = row[(ptrdiff_t)kx * ch];
                            max = v > max ? v : max;
                        }
                    }
                    *output_data++ = (int8_t)arm_nn_clamp(max, act_min, act_max);
                }
            }
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}
