/* nnc OpenCL host runtime (see nnc_opencl.h). */
#define _POSIX_C_SOURCE 200112L /* clock_gettime, setenv */
#include "nnc_opencl.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64
#define CACHE_MAGIC "NNCCLB01"

static void set_error(nnc_cl_state *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
}

const char *nnc_cl_error_name(cl_int err)
{
    switch (err) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_BUILD_PROGRAM_FAILURE) E(CL_INVALID_VALUE)
    E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_BINARY)
    E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM) E(CL_INVALID_PROGRAM_EXECUTABLE)
    E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX)
    E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS)
    E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE) E(CL_INVALID_WORK_ITEM_SIZE)
    E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_EVENT) E(CL_INVALID_OPERATION)
    E(CL_INVALID_BUFFER_SIZE) E(CL_INVALID_GLOBAL_WORK_SIZE)
#undef E
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "unknown OpenCL error";
    }
}

#define CHECK(s, call, what)                                                               \
    do {                                                                                   \
        cl_int err_ = (call);                                                              \
        if (err_ != CL_SUCCESS) {                                                          \
            set_error((s), "%s failed: %s (%d)", (what), nnc_cl_error_name(err_), err_);   \
            return NNC_CL_EFAIL;                                                           \
        }                                                                                  \
    } while (0)

int nnc_cl_configure(nnc_cl_state *s, const char *cache_path, const char *device)
{
    if (!s) return NNC_CL_EARG;
    if (s->ready) nnc_cl_release(s);
    s->cache_path[0] = s->device_spec[0] = '\0';
    if (cache_path) snprintf(s->cache_path, sizeof s->cache_path, "%s", cache_path);
    if (device) snprintf(s->device_spec, sizeof s->device_spec, "%s", device);
    s->configured = 1;
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void lower(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; ++i) dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

/* Device by spec: "" first device; digits: index over all platforms' devices; "gpu", "cpu",
 * "accelerator": first of that type; "pocl": first PoCL device; else a substring of the
 * device or platform name (case-insensitive). */
static int select_device(nnc_cl_state *s)
{
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, platforms, &np);
    if (err != CL_SUCCESS || np == 0) {
        set_error(s, "no OpenCL platform found (%s)", nnc_cl_error_name(err));
        return NNC_CL_ENOPLATFORM;
    }
    const char *spec = s->device_spec;
    char want[256];
    lower(want, spec, sizeof want);
    int index = -1;
    if (want[0]) {
        char *end = NULL;
        long v = strtol(want, &end, 10);
        if (end && *end == '\0' && v >= 0) index = (int)v;
    }
    int count = 0;
    char list[2048] = "";
    for (cl_uint p = 0; p < np; ++p) {
        cl_device_id devices[MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devices, &nd)
            != CL_SUCCESS)
            continue;
        char pname[256] = "", pl[256];
        clGetPlatformInfo(platforms[p], CL_PLATFORM_NAME, sizeof pname, pname, NULL);
        lower(pl, pname, sizeof pl);
        for (cl_uint d = 0; d < nd; ++d, ++count) {
            char dname[256] = "", dl[256];
            cl_device_type type = 0;
            clGetDeviceInfo(devices[d], CL_DEVICE_NAME, sizeof dname, dname, NULL);
            clGetDeviceInfo(devices[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            lower(dl, dname, sizeof dl);
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%d: %s (%s)", count ? ", " : "", count,
                     dname, pname);
            int match;
            if (!want[0]) match = 1;
            else if (index >= 0) match = count == index;
            else if (!strcmp(want, "gpu")) match = (type & CL_DEVICE_TYPE_GPU) != 0;
            else if (!strcmp(want, "cpu")) match = (type & CL_DEVICE_TYPE_CPU) != 0;
            else if (!strcmp(want, "accelerator"))
                match = (type & CL_DEVICE_TYPE_ACCELERATOR) != 0;
            else if (!strcmp(want, "pocl"))
                match = strstr(pl, "portable computing language") || strstr(pl, "pocl");
            else match = strstr(dl, want) || strstr(pl, want);
            if (match) {
                s->platform = platforms[p];
                s->device = devices[d];
                s->device_type = (type & CL_DEVICE_TYPE_GPU)           ? NNC_CL_GPU
                                 : (type & CL_DEVICE_TYPE_ACCELERATOR) ? NNC_CL_ACCELERATOR
                                                                       : NNC_CL_CPU;
                snprintf(s->device_name, sizeof s->device_name, "%s (%s)", dname, pname);
                return 0;
            }
        }
    }
    if (count == 0) {
        set_error(s, "no OpenCL device found on %u platform(s)", np);
        return NNC_CL_ENODEVICE;
    }
    set_error(s, "no OpenCL device matches '%s'; the devices are: %s", spec, list);
    return NNC_CL_ENODEVICE;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * UINT64_C(1099511628211);
    return h;
}

/* the binary cache key: the source, the device, its driver and the build options */
static uint64_t cache_key(nnc_cl_state *s, const char *options)
{
    char buf[1024];
    uint64_t h = UINT64_C(14695981039346656037);
    h = fnv1a(h, s->model->source, s->model->source_size);
    cl_device_info infos[] = {CL_DEVICE_NAME, CL_DEVICE_VERSION, CL_DRIVER_VERSION,
                              CL_DEVICE_VENDOR};
    for (size_t i = 0; i < sizeof infos / sizeof infos[0]; ++i) {
        buf[0] = '\0';
        clGetDeviceInfo(s->device, infos[i], sizeof buf, buf, NULL);
        h = fnv1a(h, buf, strlen(buf));
    }
    return fnv1a(h, options, strlen(options));
}

static cl_program load_cached(nnc_cl_state *s, uint64_t key)
{
    if (!s->cache_path[0]) return NULL;
    FILE *f = fopen(s->cache_path, "rb");
    if (!f) return NULL;
    char magic[8];
    uint64_t file_key = 0, size = 0;
    cl_program program = NULL;
    if (fread(magic, 1, 8, f) == 8 && !memcmp(magic, CACHE_MAGIC, 8)
        && fread(&file_key, sizeof file_key, 1, f) == 1 && file_key == key
        && fread(&size, sizeof size, 1, f) == 1 && size > 0 && size < (UINT64_C(1) << 32)) {
        unsigned char *bin = (unsigned char *)malloc((size_t)size);
        if (bin && fread(bin, 1, (size_t)size, f) == size) {
            const unsigned char *bins[1] = {bin};
            size_t sizes[1] = {(size_t)size};
            cl_int status = 0, err = 0;
            program = clCreateProgramWithBinary(s->context, 1, &s->device, sizes, bins, &status,
                                                &err);
            if (err != CL_SUCCESS || status != CL_SUCCESS) program = NULL;
        }
        free(bin);
    }
    fclose(f);
    return program;
}

static void store_cached(nnc_cl_state *s, uint64_t key)
{
    if (!s->cache_path[0]) return;
    size_t size = 0;
    if (clGetProgramInfo(s->program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL)
        != CL_SUCCESS || size == 0)
        return;
    unsigned char *bin = (unsigned char *)malloc(size);
    unsigned char *bins[1] = {bin};
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", s->cache_path);
    FILE *f = bin ? fopen(tmp, "wb") : NULL;
    if (f && clGetProgramInfo(s->program, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL)
        == CL_SUCCESS) {
        uint64_t size64 = size;
        int ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&key, sizeof key, 1, f) == 1
                 && fwrite(&size64, sizeof size64, 1, f) == 1 && fwrite(bin, 1, size, f) == size;
        ok = fclose(f) == 0 && ok;
        f = NULL;
        if (ok) rename(tmp, s->cache_path);
        else remove(tmp);
    }
    if (f) fclose(f);
    free(bin);
}

static int build_program(nnc_cl_state *s)
{
    char options[256] = "-cl-std=CL1.2";
    cl_device_fp_config fp = 0;
    clGetDeviceInfo(s->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    if (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT)  /* float / and sqrt as on the host */
        strcat(options, " -cl-fp32-correctly-rounded-divide-sqrt");
    /* the kernels' work mapping of this device type (model.cl: #if NNC_CL_SPREAD) */
    if (s->device_type != NNC_CL_CPU) strcat(options, " -DNNC_CL_SPREAD=1");
    double t0 = now_ms();
    uint64_t key = cache_key(s, options);
    s->program = load_cached(s, key);
    s->from_cache = 0;
    if (s->program && clBuildProgram(s->program, 1, &s->device, options, NULL, NULL)
        == CL_SUCCESS) {
        s->from_cache = 1;
    } else {
        if (s->program) clReleaseProgram(s->program);
        const char *src = (const char *)s->model->source;
        size_t len = s->model->source_size;
        cl_int err;
        s->program = clCreateProgramWithSource(s->context, 1, &src, &len, &err);
        CHECK(s, err, "clCreateProgramWithSource");
        err = clBuildProgram(s->program, 1, &s->device, options, NULL, NULL);
        if (err != CL_SUCCESS) {
            size_t n = 0;
            int head = snprintf(s->error, sizeof s->error,
                                "building model.cl for %s failed (%s):\n", s->device_name,
                                nnc_cl_error_name(err));
            clGetProgramBuildInfo(s->program, s->device, CL_PROGRAM_BUILD_LOG,
                                  sizeof s->error - (size_t)head - 1, s->error + head, &n);
            s->error[sizeof s->error - 1] = '\0';
            return NNC_CL_EBUILD;
        }
        store_cached(s, key);
    }
    s->build_ms = now_ms() - t0;
    return 0;
}

static cl_mem arg_buffer(nnc_cl_state *s, nnc_cl_arg a)
{
    switch (a.space) {
    case NNC_CL_ARENA: return s->arena;
    case NNC_CL_WEIGHTS: return s->weights;
    case NNC_CL_INPUT: return s->inputs[a.index];
    default: return s->outputs[a.index];
    }
}

/* every extension the model needs is one the device has, else NNC_CL_ENODEVICE naming it */
static int check_extensions(nnc_cl_state *s, const char *needed)
{
    char have[8192] = "";
    clGetDeviceInfo(s->device, CL_DEVICE_EXTENSIONS, sizeof have - 1, have, NULL);
    for (const char *p = needed; p && *p;) {
        size_t n = strcspn(p, " ");
        char word[128];
        snprintf(word, sizeof word, "%.*s", (int)n, p);
        int found = 0;
        for (const char *q = have; n && (q = strstr(q, word)) != NULL; q += n)
            if ((q == have || q[-1] == ' ') && (q[n] == ' ' || q[n] == '\0')) found = 1;
        if (n && !found) {
            set_error(s, "OpenCL device %s does not have %.*s, which this model needs (%s "
                      "tensors); choose a device that has it (--device) or compile a float32 "
                      "model", s->device_name, (int)n, p,
                      strncmp(p, "cl_khr_fp16", n) ? "float64" : "float16");
            return NNC_CL_ENODEVICE;
        }
        p += n;
        while (*p == ' ') ++p;
    }
    return 0;
}

int nnc_cl_init(nnc_cl_state *s, const nnc_cl_model *m)
{
    if (!s || !m) return NNC_CL_EARG;
    if (s->ready) return 0;
    s->model = m;
    s->error[0] = '\0';
    if (!s->configured) {  /* defaults from the environment */
        const char *cache = getenv("NNC_OPENCL_CACHE"), *dev = getenv("NNC_OPENCL_DEVICE");
        nnc_cl_configure(s, cache, dev);
    }
    /* PoCL (3.1) otherwise compiles every kernel again at its first enqueue, specialized to
     * that enqueue's sizes (VWW int8: a 15 s first run after a 0.03 s init from model.clbin),
     * although the binary built once holds generic work-group functions that ran as fast
     * (README "Compile time"). Other drivers ignore it; a value the user set is kept. */
    setenv("POCL_WORK_GROUP_SPECIALIZATION", "0", 0);
    int rc = select_device(s);
    if (rc) return rc;
    rc = check_extensions(s, m->extensions);
    if (rc) return rc;
    cl_int err;
    s->context = clCreateContext(NULL, 1, &s->device, NULL, NULL, &err);
    CHECK(s, err, "clCreateContext");
    s->queue = clCreateCommandQueue(s->context, s->device, CL_QUEUE_PROFILING_ENABLE, &err);
    CHECK(s, err, "clCreateCommandQueue");
    clGetDeviceInfo(s->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof s->base_addr_align_bits,
                    &s->base_addr_align_bits, NULL);
    rc = build_program(s);
    if (rc) return rc;
    /* zero-sized buffers are invalid in OpenCL: at least one byte each */
    s->arena = clCreateBuffer(s->context, CL_MEM_READ_WRITE,
                              m->arena_size ? (size_t)m->arena_size : 1, NULL, &err);
    CHECK(s, err, "clCreateBuffer(arena)");
    static const uint8_t zero = 0;
    s->weights = clCreateBuffer(s->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                m->weights_size ? m->weights_size : 1,
                                (void *)(m->weights_size ? m->weights : &zero), &err);
    CHECK(s, err, "clCreateBuffer(weights)");
    for (int32_t i = 0; i < m->num_inputs; ++i) {
        s->inputs[i] = clCreateBuffer(s->context, CL_MEM_READ_ONLY,
                                      m->input_nbytes[i] ? (size_t)m->input_nbytes[i] : 1, NULL,
                                      &err);
        CHECK(s, err, "clCreateBuffer(input)");
    }
    for (int32_t i = 0; i < m->num_outputs; ++i) {
        s->outputs[i] = clCreateBuffer(s->context, CL_MEM_READ_WRITE,
                                       m->outputs[i].nbytes ? (size_t)m->outputs[i].nbytes : 1,
                                       NULL, &err);
        CHECK(s, err, "clCreateBuffer(output)");
    }
    for (int32_t k = 0; k < m->num_kernels; ++k) {
        const nnc_cl_kernel_desc *d = &m->kernels[k];
        s->kernels[k] = clCreateKernel(s->program, d->name, &err);
        if (err != CL_SUCCESS) {
            set_error(s, "kernel %s: clCreateKernel failed: %s", d->name, nnc_cl_error_name(err));
            return NNC_CL_EFAIL;
        }
        for (int32_t a = 0; a < d->num_args; ++a) {
            cl_mem buf = arg_buffer(s, d->args[a]);
            err = clSetKernelArg(s->kernels[k], (cl_uint)a, sizeof buf, &buf);
            if (err != CL_SUCCESS) {
                set_error(s, "kernel %s: clSetKernelArg(%d) failed: %s", d->name, (int)a,
                          nnc_cl_error_name(err));
                return NNC_CL_EFAIL;
            }
        }
    }
    CHECK(s, clFinish(s->queue), "clFinish(init)");
    s->ready = 1;
    return 0;
}

int nnc_cl_run(nnc_cl_state *s, const void *const *inputs, void *const *outputs,
               uint64_t *kernel_ns)
{
    if (!s || !s->ready) return NNC_CL_ENOTREADY;
    const nnc_cl_model *m = s->model;
    if ((m->num_inputs && !inputs) || (m->num_outputs && !outputs)) return NNC_CL_EARG;
    for (int32_t i = 0; i < m->num_inputs; ++i)
        if (m->input_nbytes[i])
            CHECK(s, clEnqueueWriteBuffer(s->queue, s->inputs[i], CL_FALSE, 0,
                                          (size_t)m->input_nbytes[i], inputs[i], 0, NULL, NULL),
                  "clEnqueueWriteBuffer(input)");
    for (int32_t k = 0; k < m->num_kernels; ++k) {
        const nnc_cl_kernel_desc *d = &m->kernels[k];
        const size_t *local = d->local[s->device_type][0] ? d->local[s->device_type] : NULL;
        cl_int err = clEnqueueNDRangeKernel(s->queue, s->kernels[k], d->work_dim[s->device_type], NULL,
                                            d->global[s->device_type], local, 0, NULL,
                                            kernel_ns ? &s->events[k] : NULL);
        if (err != CL_SUCCESS) {
            set_error(s, "kernel %s (layer %d): clEnqueueNDRangeKernel failed: %s", d->name,
                      (int)k, nnc_cl_error_name(err));
            return (err == CL_OUT_OF_RESOURCES || err == CL_MEM_OBJECT_ALLOCATION_FAILURE)
                       ? NNC_CL_ERESOURCES : NNC_CL_EFAIL;
        }
    }
    for (int32_t i = 0; i < m->num_outputs; ++i) {
        const nnc_cl_region *r = &m->outputs[i];
        if (!r->nbytes) continue;
        nnc_cl_arg a = {r->space, r->index};
        CHECK(s, clEnqueueReadBuffer(s->queue, arg_buffer(s, a), CL_FALSE, (size_t)r->offset,
                                     (size_t)r->nbytes, outputs[i], 0, NULL, NULL),
              "clEnqueueReadBuffer(output)");
    }
    CHECK(s, clFinish(s->queue), "clFinish");
    if (kernel_ns) {
        for (int32_t k = 0; k < m->num_kernels; ++k) {
            cl_ulong queued = 0, start = 0, end = 0;
            clGetEventProfilingInfo(s->events[k], CL_PROFILING_COMMAND_QUEUED, sizeof queued,
                                    &queued, NULL);
            clGetEventProfilingInfo(s->events[k], CL_PROFILING_COMMAND_START, sizeof start,
                                    &start, NULL);
            clGetEventProfilingInfo(s->events[k], CL_PROFILING_COMMAND_END, sizeof end, &end,
                                    NULL);
            kernel_ns[2 * k] = end > queued ? (uint64_t)(end - queued) : 0;
            kernel_ns[2 * k + 1] = end > start ? (uint64_t)(end - start) : 0;
            clReleaseEvent(s->events[k]);
        }
    }
    return 0;
}

int nnc_cl_bench(nnc_cl_state *s, const void *const *inputs, void *const *outputs,
                 int32_t warmup, int32_t repeat, double *wall_ms, uint64_t *kernel_ns)
{
    if (!s || !s->ready) return NNC_CL_ENOTREADY;
    if (warmup < 0 || repeat < 1 || !wall_ms) return NNC_CL_EARG;
    for (int32_t r = 0; r < warmup; ++r) {
        int rc = nnc_cl_run(s, inputs, outputs, NULL);
        if (rc) return rc;
    }
    for (int32_t r = 0; r < repeat; ++r) {
        /* the wall time of a run without events; the events come from a second, profiled run */
        double t0 = now_ms();
        int rc = nnc_cl_run(s, inputs, outputs, NULL);
        wall_ms[r] = now_ms() - t0;
        if (rc) return rc;
        if (kernel_ns) {
            rc = nnc_cl_run(s, inputs, outputs,
                            kernel_ns + (size_t)r * 2 * (size_t)s->model->num_kernels);
            if (rc) return rc;
        }
    }
    return 0;
}

void nnc_cl_release(nnc_cl_state *s)
{
    if (!s || !s->model) return;
    const nnc_cl_model *m = s->model;
    for (int32_t k = 0; k < m->num_kernels; ++k)
        if (s->kernels[k]) clReleaseKernel(s->kernels[k]), s->kernels[k] = NULL;
    for (int32_t i = 0; i < m->num_inputs; ++i)
        if (s->inputs[i]) clReleaseMemObject(s->inputs[i]), s->inputs[i] = NULL;
    for (int32_t i = 0; i < m->num_outputs; ++i)
        if (s->outputs[i]) clReleaseMemObject(s->outputs[i]), s->outputs[i] = NULL;
    if (s->arena) clReleaseMemObject(s->arena), s->arena = NULL;
    if (s->weights) clReleaseMemObject(s->weights), s->weights = NULL;
    if (s->program) clReleaseProgram(s->program), s->program = NULL;
    if (s->queue) clReleaseCommandQueue(s->queue), s->queue = NULL;
    if (s->context) clReleaseContext(s->context), s->context = NULL;
    s->ready = 0;
}
