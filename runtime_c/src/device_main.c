/* nnc device driver for emulated boards (newlib + semihosting): load inputs, run the model once,
 * write outputs, print the timing.
 *
 * Inputs come from input<i>.bin in the emulator's working directory (exactly nbytes each) or,
 * when a file is absent, from a deterministic pseudo-random generator. Outputs go to
 * output<i>.bin. The run is timed with the board timer, in total and per kernel through the
 * NNC_LAYER_BEGIN/END hooks (see nnc_board.h); the emulator has no caches, so one run is as
 * good as many. Results, one per line, for the host to parse:
 *
 *   NNC_RESULT status=<rc> total_ticks=<n> layers=<L> stack_bytes=<measured peak>
 *   NNC_LAYER <i> ticks=<n>                                     (L lines)
 *   NNC_END
 *
 * Batch mode (`nnc eval`: many samples in one emulator run): when batch.bin exists, it holds a
 * 16-byte header (magic "NNCB", uint32 version 1, uint32 N, uint32 bytes per sample) and then N
 * samples, each the model's inputs back to back in order. The model runs once per sample;
 * batch_out.bin gets each sample's outputs back to back, batch_ticks.bin (1 + L) uint32 per
 * sample (total ticks, then each layer's), and one line per sample reports progress:
 *
 *   NNC_SAMPLE <i> status=<rc>
 *
 * followed by the NNC_RESULT / NNC_LAYER lines of the last sample (stack_bytes: the peak over
 * all samples) and NNC_END, as above. All values little-endian.
 *
 * Build: -DNNC_PREFIX=<prefix> -DNNC_LAYER_CAPACITY=<number of layers>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "nnc_board.h"

#ifndef NNC_PREFIX
#define NNC_PREFIX nnc
#endif
#ifndef NNC_LAYER_CAPACITY
#define NNC_LAYER_CAPACITY 1
#endif
#define NNC_CAT_(a, b) a##b
#define NNC_CAT(a, b) NNC_CAT_(a, b)
#define NNC_SYM(name) NNC_CAT(NNC_PREFIX, NNC_CAT(_, name))

#define MODEL_INIT NNC_SYM(init)
#define MODEL_RUN NNC_SYM(run)
#define MODEL_NUM_INPUTS NNC_SYM(num_inputs)
#define MODEL_NUM_OUTPUTS NNC_SYM(num_outputs)
#define MODEL_NUM_LAYERS NNC_SYM(num_layers)
#define MODEL_INPUTS NNC_SYM(inputs)
#define MODEL_OUTPUTS NNC_SYM(outputs)

#define STACK_PAINT 0xA5A5A5A5u

volatile int32_t nnc_current_layer = -1;
static uint32_t layer_start;
static uint32_t layer_ticks[NNC_LAYER_CAPACITY > 0 ? NNC_LAYER_CAPACITY : 1];

extern uint32_t __StackLimit, __StackTop; /* from the board's linker script */

void nnc_layer_begin(int32_t layer)
{
    nnc_current_layer = layer;
#ifdef NNC_TEST_FAULT_LAYER /* for nnc's tests: an undefined instruction in this layer */
    if (layer == NNC_TEST_FAULT_LAYER) __asm__ volatile("udf #0");
#endif
#ifdef NNC_TEST_HANG_LAYER /* for nnc's tests: never finish this layer */
    if (layer == NNC_TEST_HANG_LAYER)
        for (;;) {
        }
#endif
    layer_start = nnc_board_ticks();
}

void nnc_layer_end(int32_t layer)
{
    uint32_t now = nnc_board_ticks();
    if (layer >= 0 && layer < NNC_LAYER_CAPACITY) layer_ticks[layer] += now - layer_start;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void)
{
    /* xorshift64*: deterministic inputs when no file is given */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static void fill_random(uint8_t *data, const nnc_tensor_desc *d)
{
    uint64_t n = 1, k;
    int32_t i;
    for (i = 0; i < d->rank; ++i) n *= (uint64_t)d->shape[i];
    for (k = 0; k < n; ++k) {
        uint64_t r = rng_next();
        switch (d->dtype) {
        case NNC_FLOAT32: ((float *)data)[k] = (float)(int32_t)(r >> 40) / 8388608.0f; break;
        case NNC_FLOAT64: ((double *)data)[k] = (double)(int32_t)(r >> 40) / 8388608.0; break;
        case NNC_BOOL: data[k] = (uint8_t)(r >> 63); break;
        case NNC_INT8: case NNC_UINT8: data[k] = (uint8_t)(r >> 60); break;
        case NNC_INT16: case NNC_UINT16: ((uint16_t *)data)[k] = (uint16_t)(r >> 60); break;
        case NNC_INT32: case NNC_UINT32: ((uint32_t *)data)[k] = (uint32_t)(r >> 60); break;
        case NNC_INT64: case NNC_UINT64: ((uint64_t *)data)[k] = r >> 60; break;
        default: memset(data, 0, (size_t)d->nbytes); return;
        }
    }
}

/* 1 when the file was read, 0 when it does not exist, -1 when it has the wrong size */
static int read_input(int index, uint8_t *data, size_t nbytes)
{
    char path[32];
    FILE *f;
    size_t got;
    int extra;
    snprintf(path, sizeof path, "input%d.bin", index);
    f = fopen(path, "rb");
    if (!f) return 0;
    got = fread(data, 1, nbytes, f);
    extra = fgetc(f);
    fclose(f);
    if (got != nbytes || extra != EOF) {
        printf("NNC_ERROR %s must hold exactly %lu bytes\n", path, (unsigned long)nbytes);
        return -1;
    }
    return 1;
}

static int write_output(int index, const uint8_t *data, size_t nbytes)
{
    char path[32];
    FILE *f;
    size_t put;
    snprintf(path, sizeof path, "output%d.bin", index);
    f = fopen(path, "wb");
    if (!f) {
        printf("NNC_ERROR cannot create %s\n", path);
        return -1;
    }
    put = fwrite(data, 1, nbytes, f);
    if (fclose(f) != 0 || put != nbytes) {
        printf("NNC_ERROR cannot write %s\n", path);
        return -1;
    }
    return 0;
}

/* Fills the unused stack (all of it below the stack pointer) with a pattern, so the peak use
 * of what runs next can be read back: stack_used() is then exact to the word. In assembly: in C
 * the compiler may read sp before it pushes this function's own frame (shrink-wrapping) and the
 * loop would paint over the saved return address. */
__attribute__((noinline)) static void paint_stack(void)
{
    uint32_t *p = &__StackLimit, *sp;
    __asm__ volatile("    mov   %1, sp\n"
                     "1:  cmp   %0, %1\n"
                     "    bhs   2f\n"
                     "    str   %2, [%0], #4\n"
                     "    b     1b\n"
                     "2:\n"
                     : "+&r"(p), "=&r"(sp)
                     : "r"(STACK_PAINT)
                     : "memory", "cc");
}

static uint32_t stack_used(void)
{
    const volatile uint32_t *p = &__StackLimit;
    while (p < &__StackTop && *p == STACK_PAINT) ++p;
    return (uint32_t)((uintptr_t)&__StackTop - (uintptr_t)p);
}

/* One timed model run, shared by the single and the batch path so both count the same. */
__attribute__((noinline)) static int timed_run(const void **inputs, void **outputs,
                                               uint32_t *ticks)
{
    uint32_t start = nnc_board_ticks();
    int rc = MODEL_RUN(inputs, outputs);
    *ticks = nnc_board_ticks() - start;
    nnc_current_layer = -1;
    return rc;
}

#define BATCH_MAGIC 0x42434E4Eu /* "NNCB" read as a little-endian uint32 */

static uint32_t read_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Runs every sample of batch.bin (opened as `in`); returns main's exit code. */
static int run_batch(FILE *in, const void **inputs, void **outputs)
{
    uint8_t header[16];
    uint32_t n, sample_bytes, expected = 0, k, total = 0;
    uint32_t counts[1 + (NNC_LAYER_CAPACITY > 0 ? NNC_LAYER_CAPACITY : 1)];
    uint32_t ncounts = 1 + (uint32_t)(MODEL_NUM_LAYERS < NNC_LAYER_CAPACITY ? MODEL_NUM_LAYERS
                                                                           : NNC_LAYER_CAPACITY);
    FILE *out, *ticks;
    int32_t i;
    int rc = 0, first_rc = 0;

    for (i = 0; i < MODEL_NUM_INPUTS; ++i) expected += (uint32_t)MODEL_INPUTS[i].nbytes;
    if (fread(header, 1, sizeof header, in) != sizeof header || read_u32(header) != BATCH_MAGIC
        || read_u32(header + 4) != 1u) {
        printf("NNC_ERROR batch.bin: not an nnc batch file (version 1)\n");
        return 3;
    }
    n = read_u32(header + 8);
    sample_bytes = read_u32(header + 12);
    if (sample_bytes != expected) {
        printf("NNC_ERROR batch.bin: %lu bytes per sample, the model's inputs take %lu\n",
               (unsigned long)sample_bytes, (unsigned long)expected);
        return 3;
    }
    out = fopen("batch_out.bin", "wb");
    ticks = fopen("batch_ticks.bin", "wb");
    if (!out || !ticks) {
        printf("NNC_ERROR cannot create batch_out.bin / batch_ticks.bin\n");
        return 3;
    }
    paint_stack();
    for (k = 0; k < n; ++k) {
        for (i = 0; i < MODEL_NUM_INPUTS; ++i) {
            size_t nb = (size_t)MODEL_INPUTS[i].nbytes;
            if (fread((void *)inputs[i], 1, nb, in) != nb) {
                printf("NNC_ERROR batch.bin: sample %lu is cut short\n", (unsigned long)k);
                return 3;
            }
        }
        memset(layer_ticks, 0, sizeof layer_ticks);
        rc = timed_run(inputs, outputs, &total);
        if (rc != 0 && first_rc == 0) first_rc = rc;
        counts[0] = total;
        for (i = 0; i + 1 < (int32_t)ncounts; ++i) counts[i + 1] = layer_ticks[i];
        for (i = 0; i < MODEL_NUM_OUTPUTS; ++i) {
            size_t nb = (size_t)MODEL_OUTPUTS[i].nbytes;
            if (fwrite(outputs[i], 1, nb, out) != nb) {
                printf("NNC_ERROR cannot write batch_out.bin\n");
                return 3;
            }
        }
        if (fwrite(counts, sizeof counts[0], ncounts, ticks) != ncounts) {
            printf("NNC_ERROR cannot write batch_ticks.bin\n");
            return 3;
        }
        printf("NNC_SAMPLE %lu status=%d\n", (unsigned long)k, rc);
        fflush(stdout);
    }
    if (fclose(out) != 0 || fclose(ticks) != 0) {
        printf("NNC_ERROR cannot write batch_out.bin / batch_ticks.bin\n");
        return 3;
    }
    printf("NNC_RESULT status=%d total_ticks=%lu layers=%ld stack_bytes=%lu\n", first_rc,
           (unsigned long)total, (long)MODEL_NUM_LAYERS, (unsigned long)stack_used());
    for (i = 0; i < MODEL_NUM_LAYERS && i < NNC_LAYER_CAPACITY; ++i)
        printf("NNC_LAYER %ld ticks=%lu\n", (long)i, (unsigned long)layer_ticks[i]);
    printf("NNC_END\n");
    fflush(stdout);
    return first_rc == 0 ? 0 : 4;
}

int main(void)
{
    FILE *batch;
    const void *inputs[MODEL_NUM_INPUTS > 0 ? MODEL_NUM_INPUTS : 1];
    void *outputs[MODEL_NUM_OUTPUTS > 0 ? MODEL_NUM_OUTPUTS : 1];
    uint32_t total;
    int32_t i;
    int rc;

    nnc_board_init();
    if (MODEL_INIT() != 0) {
        printf("NNC_ERROR model init failed\n");
        return 3;
    }
    for (i = 0; i < MODEL_NUM_INPUTS; ++i) {
        const nnc_tensor_desc *d = &MODEL_INPUTS[i];
        uint8_t *data = malloc(d->nbytes ? (size_t)d->nbytes : 1u);
        if (!data) {
            printf("NNC_ERROR out of heap for input %ld (%lu bytes)\n", (long)i,
                   (unsigned long)d->nbytes);
            return 3;
        }
        inputs[i] = data;
    }
    for (i = 0; i < MODEL_NUM_OUTPUTS; ++i) {
        outputs[i] = malloc(MODEL_OUTPUTS[i].nbytes ? (size_t)MODEL_OUTPUTS[i].nbytes : 1u);
        if (!outputs[i]) {
            printf("NNC_ERROR out of heap for output %ld\n", (long)i);
            return 3;
        }
    }
    batch = fopen("batch.bin", "rb");
    if (batch) {
        rc = run_batch(batch, inputs, outputs);
        fclose(batch);
        return rc;
    }
    for (i = 0; i < MODEL_NUM_INPUTS; ++i) {
        const nnc_tensor_desc *d = &MODEL_INPUTS[i];
        rc = read_input((int)i, (uint8_t *)inputs[i], (size_t)d->nbytes);
        if (rc < 0) return 3;
        if (rc == 0) fill_random((uint8_t *)inputs[i], d);
    }

    paint_stack();
    rc = timed_run(inputs, outputs, &total);

    printf("NNC_RESULT status=%d total_ticks=%lu layers=%ld stack_bytes=%lu\n", rc,
           (unsigned long)total, (long)MODEL_NUM_LAYERS, (unsigned long)stack_used());
    for (i = 0; i < MODEL_NUM_LAYERS && i < NNC_LAYER_CAPACITY; ++i)
        printf("NNC_LAYER %ld ticks=%lu\n", (long)i, (unsigned long)layer_ticks[i]);
    for (i = 0; i < MODEL_NUM_OUTPUTS; ++i)
        if (write_output((int)i, outputs[i], (size_t)MODEL_OUTPUTS[i].nbytes) != 0) return 3;
    printf("NNC_END\n");
    fflush(stdout);
    return rc == 0 ? 0 : 4;
}
