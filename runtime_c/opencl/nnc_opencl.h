/* nnc OpenCL host runtime: runs one generated model (model.cl + the tables in model.c) on an
 * OpenCL 1.2 device through any ICD loader. C99. Everything is allocated in nnc_cl_init; a run
 * enqueues the input writes, the kernels in order and the output reads, and allocates nothing. */
#ifndef NNC_OPENCL_H
#define NNC_OPENCL_H

#include <stddef.h>
#include <stdint.h>

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

/* The runtime's external functions carry the model's prefix (nnc_opencl_prefix.h, generated
 * next to it: `#define NNC_CL_PREFIX foo` makes nnc_cl_init foo_cl_init, ...), so two models
 * built with different prefixes link into one binary; the source keeps the nnc_cl_ names. */
#include "nnc_opencl_prefix.h"
#ifndef NNC_CL_PREFIX
#define NNC_CL_PREFIX nnc
#endif
#define NNC_CL_CAT_(p, n) p##_cl_##n
#define NNC_CL_NAME(p, n) NNC_CL_CAT_(p, n)
#define nnc_cl_configure NNC_CL_NAME(NNC_CL_PREFIX, configure)
#define nnc_cl_init NNC_CL_NAME(NNC_CL_PREFIX, init)
#define nnc_cl_run NNC_CL_NAME(NNC_CL_PREFIX, run)
#define nnc_cl_bench NNC_CL_NAME(NNC_CL_PREFIX, bench)
#define nnc_cl_release NNC_CL_NAME(NNC_CL_PREFIX, release)
#define nnc_cl_error_name NNC_CL_NAME(NNC_CL_PREFIX, error_name)

#ifdef __cplusplus
extern "C" {
#endif

/* Where a kernel argument / a model output lives (the generated tables use the numbers). */
enum { NNC_CL_ARENA = 0, NNC_CL_WEIGHTS = 1, NNC_CL_INPUT = 2, NNC_CL_OUTPUT = 3 };

/* Error codes of nnc_cl_init / nnc_cl_run; nnc_cl_state.error says more. */
enum {
    NNC_CL_EARG = -1,          /* bad arguments */
    NNC_CL_ENOPLATFORM = -10,  /* no OpenCL platform (no ICD installed) */
    NNC_CL_ENODEVICE = -11,    /* no device, or none matching the requested one */
    NNC_CL_EBUILD = -12,       /* the program did not build: error holds the build log */
    NNC_CL_EFAIL = -13,        /* another OpenCL call failed */
    NNC_CL_ERESOURCES = -14,   /* out of resources/memory enqueuing a kernel (named in error) */
    NNC_CL_ENOTREADY = -15     /* run before a successful init */
};

typedef struct nnc_cl_arg {
    int32_t space; /* NNC_CL_ARENA, ... */
    int32_t index; /* which input/output */
} nnc_cl_arg;

typedef struct nnc_cl_kernel_desc {
    const char *name;
    int32_t num_args;
    const nnc_cl_arg *args;
    uint32_t work_dim[3];
    /* launch sizes per device type (NNC_CL_CPU, NNC_CL_GPU, NNC_CL_ACCELERATOR): the global
     * size and the work-group size (all 0: the driver picks), from the work mapping */
    size_t global[3][3];
    size_t local[3][3];
} nnc_cl_kernel_desc;

enum { NNC_CL_CPU = 0, NNC_CL_GPU = 1, NNC_CL_ACCELERATOR = 2 };

typedef struct nnc_cl_region {
    int32_t space;
    int32_t index;
    uint64_t offset;
    uint64_t nbytes;
} nnc_cl_region;

typedef struct nnc_cl_model {
    const char *name;
    const uint8_t *source;
    size_t source_size;
    const uint8_t *weights;
    size_t weights_size;
    uint64_t arena_size;
    int32_t num_inputs;
    const uint64_t *input_nbytes;
    int32_t num_outputs;
    const nnc_cl_region *outputs;
    int32_t num_kernels;
    const nnc_cl_kernel_desc *kernels;
    /* space-separated OpenCL extensions model.cl needs ("cl_khr_fp16 cl_khr_fp64" or "") */
    const char *extensions;
} nnc_cl_model;

typedef struct nnc_cl_state {
    const nnc_cl_model *model;
    /* arrays of the model's sizes, owned by model.c */
    cl_mem *inputs;
    cl_mem *outputs;
    cl_kernel *kernels;
    cl_event *events;
    /* configuration */
    char cache_path[4096];
    char device_spec[256];
    int configured;
    /* OpenCL objects */
    cl_platform_id platform;
    cl_device_id device;
    int32_t device_type; /* NNC_CL_CPU, ...: which launch sizes the kernels use */
    cl_context context;
    cl_command_queue queue;
    cl_program program;
    cl_mem arena;
    cl_mem weights;
    int ready;
    /* what happened at init */
    double build_ms;
    int32_t from_cache;
    cl_uint base_addr_align_bits;
    char device_name[256];
    char error[16384];
} nnc_cl_state;

int nnc_cl_configure(nnc_cl_state *s, const char *cache_path, const char *device);
int nnc_cl_init(nnc_cl_state *s, const nnc_cl_model *model);
/* kernel_ns: NULL, or 2 * num_kernels slots: per kernel its queued->end and start->end
 * nanoseconds from profiling events (queued->end includes waiting behind earlier kernels) */
int nnc_cl_run(nnc_cl_state *s, const void *const *inputs, void *const *outputs,
               uint64_t *kernel_ns);
/* wall_ms[r] per timed run; kernel_ns: NULL or repeat * 2 * num_kernels slots (as in run) */
int nnc_cl_bench(nnc_cl_state *s, const void *const *inputs, void *const *outputs,
                 int32_t warmup, int32_t repeat, double *wall_ms, uint64_t *kernel_ns);
void nnc_cl_release(nnc_cl_state *s);
const char *nnc_cl_error_name(cl_int err);

#ifdef __cplusplus
}
#endif

#endif /* NNC_OPENCL_H */
