/* nnc benchmark driver: times <prefix>_run() and prints JSON. Host only (uses malloc and stdio).
 *
 *   bench [--warmup N] [--repeat N] [--seed S] [--zeros]
 *         [--input I FILE]... [--output I FILE]...
 *
 * Inputs not given as raw binary files are filled with pseudo-random values (or zeros with
 * --zeros). Build: cc -std=c99 -D_POSIX_C_SOURCE=199309L -DNNC_PREFIX=<prefix> bench_main.c model.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

#ifndef NNC_PREFIX
#define NNC_PREFIX nnc
#endif
#define NNC_CAT_(a, b) a##b
#define NNC_CAT(a, b) NNC_CAT_(a, b)
#define NNC_SYM(name) NNC_CAT(NNC_PREFIX, NNC_CAT(_, name))

#define MODEL_INIT NNC_SYM(init)
#define MODEL_RUN NNC_SYM(run)
#define MODEL_NUM_INPUTS NNC_SYM(num_inputs)
#define MODEL_NUM_OUTPUTS NNC_SYM(num_outputs)
#define MODEL_INPUTS NNC_SYM(inputs)
#define MODEL_OUTPUTS NNC_SYM(outputs)
#define MODEL_ARENA_SIZE NNC_SYM(arena_size)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void)
{
    /* xorshift64*: deterministic, good enough for benchmark inputs */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static double rng_uniform(void) /* in [-1, 1) */
{
    return (double)(rng_next() >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static void fill_random(void *data, const nnc_tensor_desc *d)
{
    uint64_t n = 1;
    int32_t i;
    for (i = 0; i < d->rank; ++i) n *= (uint64_t)d->shape[i];
    for (uint64_t k = 0; k < n; ++k) {
        switch (d->dtype) {
        case NNC_FLOAT32: ((float *)data)[k] = (float)rng_uniform(); break;
        case NNC_FLOAT64: ((double *)data)[k] = rng_uniform(); break;
#ifdef NNC_HAS_F16
        case NNC_FLOAT16: ((nnc_f16 *)data)[k] = NNC_F16(rng_uniform()); break;
#endif
        case NNC_BOOL: ((uint8_t *)data)[k] = (uint8_t)(rng_next() >> 63); break;
        case NNC_INT8: case NNC_UINT8: ((uint8_t *)data)[k] = (uint8_t)(rng_next() >> 60); break;
        case NNC_INT16: case NNC_UINT16: ((uint16_t *)data)[k] = (uint16_t)(rng_next() >> 60); break;
        case NNC_INT32: case NNC_UINT32: ((uint32_t *)data)[k] = (uint32_t)(rng_next() >> 60); break;
        case NNC_INT64: case NNC_UINT64: ((uint64_t *)data)[k] = rng_next() >> 60; break;
        default: memset(data, 0, (size_t)d->nbytes); return;
        }
    }
}

static int read_file(const char *path, void *data, uint64_t nbytes)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bench: cannot open %s\n", path);
        return -1;
    }
    size_t got = fread(data, 1, (size_t)nbytes, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != nbytes || extra != EOF) {
        fprintf(stderr, "bench: %s must hold exactly %llu bytes\n", path,
                (unsigned long long)nbytes);
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const void *data, uint64_t nbytes)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, (size_t)nbytes, f) != nbytes) {
        fprintf(stderr, "bench: cannot write %s\n", path);
        if (f) fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static int usage(void)
{
    fprintf(stderr, "usage: bench [--warmup N] [--repeat N] [--seed S] [--zeros] "
                    "[--input I FILE]... [--output I FILE]...\n");
    return 2;
}

int main(int argc, char **argv)
{
    long warmup = 10, repeat = 100;
    int zeros = 0;
    const int n_in = MODEL_NUM_INPUTS, n_out = MODEL_NUM_OUTPUTS;
    const char **in_paths = calloc((size_t)n_in + 1, sizeof *in_paths);
    const char **out_paths = calloc((size_t)n_out + 1, sizeof *out_paths);
    void **ins = calloc((size_t)n_in + 1, sizeof *ins);
    void **outs = calloc((size_t)n_out + 1, sizeof *outs);
    int i;
    if (!in_paths || !out_paths || !ins || !outs) return 1;

    for (i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (!strcmp(a, "--warmup") && i + 1 < argc) warmup = atol(argv[++i]);
        else if (!strcmp(a, "--repeat") && i + 1 < argc) repeat = atol(argv[++i]);
        else if (!strcmp(a, "--seed") && i + 1 < argc) rng_state = strtoull(argv[++i], NULL, 0) | 1u;
        else if (!strcmp(a, "--zeros")) zeros = 1;
        else if ((!strcmp(a, "--input") || !strcmp(a, "--output")) && i + 2 < argc) {
            int is_in = a[2] == 'i';
            int k = atoi(argv[i + 1]);
            if (k < 0 || k >= (is_in ? n_in : n_out)) {
                fprintf(stderr, "bench: no %s %d\n", is_in ? "input" : "output", k);
                return 2;
            }
            (is_in ? in_paths : out_paths)[k] = argv[i + 2];
            i += 2;
        } else return usage();
    }
    if (repeat < 1 || warmup < 0) return usage();

    for (i = 0; i < n_in; ++i) {
        const nnc_tensor_desc *d = &MODEL_INPUTS[i];
        ins[i] = calloc((size_t)d->nbytes + 1, 1);
        if (!ins[i]) return 1;
        if (in_paths[i]) {
            if (read_file(in_paths[i], ins[i], d->nbytes)) return 1;
        } else if (!zeros) {
            fill_random(ins[i], d);
        }
    }
    for (i = 0; i < n_out; ++i) {
        outs[i] = calloc((size_t)MODEL_OUTPUTS[i].nbytes + 1, 1);
        if (!outs[i]) return 1;
    }

    if (MODEL_INIT() != 0) {
        fprintf(stderr, "bench: init failed\n");
        return 1;
    }
    for (long r = 0; r < warmup; ++r) {
        if (MODEL_RUN((const void *const *)ins, outs) != 0) {
            fprintf(stderr, "bench: run failed\n");
            return 1;
        }
    }
    double *times = malloc((size_t)repeat * sizeof *times);
    if (!times) return 1;
    for (long r = 0; r < repeat; ++r) {
        double t0 = now_ms();
        MODEL_RUN((const void *const *)ins, outs);
        times[r] = now_ms() - t0;
    }
    double sum = 0;
    for (long r = 0; r < repeat; ++r) sum += times[r];
    qsort(times, (size_t)repeat, sizeof *times, cmp_double);
    double median = repeat % 2 ? times[repeat / 2]
                               : 0.5 * (times[repeat / 2 - 1] + times[repeat / 2]);

    for (i = 0; i < n_out; ++i) {
        if (out_paths[i] && write_file(out_paths[i], outs[i], MODEL_OUTPUTS[i].nbytes)) return 1;
    }

    printf("{\"warmup\": %ld, \"repeat\": %ld, \"arena_bytes\": %llu, ", warmup, repeat,
           (unsigned long long)MODEL_ARENA_SIZE);
    printf("\"latency_ms\": {\"median\": %.6f, \"min\": %.6f, \"max\": %.6f, \"mean\": %.6f}, ",
           median, times[0], times[repeat - 1], sum / (double)repeat);
    printf("\"inputs\": [");
    for (i = 0; i < n_in; ++i) {
        fputs(i ? ", " : "", stdout);
        json_string(MODEL_INPUTS[i].name);
    }
    printf("], \"outputs\": [");
    for (i = 0; i < n_out; ++i) {
        fputs(i ? ", " : "", stdout);
        json_string(MODEL_OUTPUTS[i].name);
    }
    printf("]}\n");

    for (i = 0; i < n_in; ++i) free(ins[i]);
    for (i = 0; i < n_out; ++i) free(outs[i]);
    free(times);
    free(ins);
    free(outs);
    free((void *)in_paths);
    free((void *)out_paths);
    return 0;
}
