/* nnc portable CMSIS-NN subset: s8 fully connected, per-tensor and per-channel requantization. */
#include "arm_nnfunctions.h"
#include "arm_nnsupportfunctions.h"

/* One kernel for both variants: `mults`/`shifts` hold one value, or one per output channel. */
static arm_cmsis_nn_status fully_connected(const cmsis_nn_fc_params *fc_params,
                                           const int32_t *mults,
                                           const int32_t *shifts,
                                           const int32_t per_channel,
                                           const cmsis_nn_dims *input_dims,
                                           const int8_t *input_data,
                                           const cmsis_nn_dims *filter_dims,
                                           const int8_t *filter_data,
                                           const int32_t *bias_data,
                                           const cmsis_nn_dims *output_dims,
                                           int8_t *output_data)
{
    const int32_t depth = filter_dims->n;
    const int32_t out_c = output_dims->c;
    const int32_t in_off = fc_params->input_offset, w_off = fc_params->filter_offset;
    const int32_t out_off = fc_params->output_offset;
    const int32_t act_min = fc_params->activation.min, act_max = fc_params->activation.max;

    if (depth <= 0 || out_c != filter_dims->c) {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input_data + (ptrdiff_t)b * depth;
        for (int32_t oc = 0; oc < out_c; oc++) {
            const int8_t *w = filter_data + (ptrdiff_t)oc * depth;
            int32_t acc = bias_data != NULL ? bias_data[oc] : 0;
            for (int32_t i = 0; i < depth; i++) {
                acc += ((int32_t)in[i] + in_off) * ((int32_t)w[i] + w_off);
            }
            const int32_t q = per_channel ? oc : 0;
            acc = arm_nn_requantize(acc, mults[q], shifts[q]);
            *output_data++ = (int8_t)arm_nn_clamp(acc + out_off, act_min, act_max);
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}

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
                                           int8_t *output_data)
{
    (void)ctx;
    (void)bias_dims;
    return fully_connected(fc_params, &quant_params->multiplier, &quant_params->shift, 0, input_dims,
                           input_data, filter_dims, filter_data, bias_data, output_dims, output_data);
}

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
                                                       int8_t *output_data)
{
    (void)ctx;
    (void)bias_dims;
    return fully_connected(fc_params, quant_params->multiplier, quant_params->shift, 1, input_dims,
                           input_data, filter_dims, filter_data, bias_data, output_dims, output_data);
}
