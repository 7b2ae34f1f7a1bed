/*
 * fake_cuda.c — a fake CUDA driver (and NVRTC) on host memory, for CI.
 *
 * It TESTS FRAMEBUS'S LOGIC, NOT CUDA: the orchestration (streams, events,
 * leases, fences, pinning, errors) runs against it on machines with no GPU.
 * framebus loads it instead of libcuda.so.1 when FRAMEBUS_CUDA_DRIVER (and
 * FRAMEBUS_CUDA_NVRTC) name it. Built by the tests:
 *     gcc -O2 -shared -fPIC -pthread -o target/fake_cuda/libfake_cuda.so fake_cuda.c
 *
 * Model:
 *  - device pointers are host allocations (malloc); copies are memcpy;
 *  - each stream runs its work in order on its own thread; the default
 *    streams (0, 1 = legacy, 2 = per-thread) are one shared stream, with no
 *    implicit synchronisation with other streams (framebus uses non-blocking
 *    streams only);
 *  - an event completes when its stream reaches it; cuStreamWaitEvent makes a
 *    stream's thread wait for the event;
 *  - cuMemHostRegister records registrations (double registration and
 *    unregistering an unknown pointer are errors, as in CUDA; so is a
 *    read-only mapping without CU_MEMHOSTREGISTER_READ_ONLY, which CUDA
 *    cannot pin for writing);
 *  - NVRTC "compiles" by returning the source; cuModuleLoadData accepts it;
 *    cuLaunchKernel of a framebus kernel runs a C reference of framebus's CPU
 *    kernels (the tests compare it with framebus's CPU kernels).
 *
 * Knobs (environment, read when the library is loaded; or fake_cuda_set() at run time):
 *  FAKE_CUDA_DEVICES=n (1), FAKE_CUDA_VERSION=12040, FAKE_CUDA_MEMORY=bytes (1 GiB),
 *  FAKE_CUDA_FAIL_ALLOCS=n (the next n cuMemAlloc fail: out of memory),
 *  FAKE_CUDA_SLOW_MS=ms (every stream op sleeps), FAKE_CUDA_FAIL_COPIES=1,
 *  FAKE_CUDA_FAIL_REGISTER=1, FAKE_CUDA_FAIL_COMPILE=1.
 * Counters: fake_cuda_get("registered_bytes" | "registered_ranges" |
 *  "allocated_bytes" | "allocations" | "allocs" | "frees" | "launches" |
 *  "copies" | "ctx_syncs" | "stream_waits" | "register_calls" | "unregister_calls" |
 *  "readonly_ranges" (live registrations made with CU_MEMHOSTREGISTER_READ_ONLY)).
 * Test helpers: fake_cuda_set_stream_slow(stream, ms), fake_cuda_stream_sleep(stream, ms).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef uint64_t CUdeviceptr;
enum {
    OK = 0, E_INVALID_VALUE = 1, E_OOM = 2, E_NOT_INIT = 3, E_NO_DEVICE = 100,
    E_INVALID_DEVICE = 101, E_INVALID_IMAGE = 200, E_INVALID_HANDLE = 400,
    E_NOT_FOUND = 500, E_NOT_READY = 600, E_ALREADY_REG = 712, E_NOT_REG = 713,
    E_UNKNOWN = 999
};

static pthread_mutex_t G = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t GC = PTHREAD_COND_INITIALIZER;
static int inited, n_devices = 1, version = 12040;
static long fail_allocs, slow_ms, fail_copies, fail_register, fail_compile;
static size_t mem_total = (size_t)1 << 30;
static long c_registered_bytes, c_registered_ranges, c_allocated_bytes, c_allocations,
    c_allocs, c_frees, c_launches, c_copies, c_ctx_syncs, c_stream_waits,
    c_register_calls, c_unregister_calls, c_readonly_ranges;

static long env_long(const char *name, long def) {
    const char *v = getenv(name);
    return (v && *v) ? atol(v) : def;
}

static void sleep_ms(long ms) {
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}

/* ---- allocations and registrations (linked lists under G) ---- */
struct range { uintptr_t p; size_t n; int readonly; struct range *next; };
static struct range *allocs, *regs;

static struct range *find(struct range *l, uintptr_t p) {
    for (; l; l = l->next) if (l->p == p) return l;
    return NULL;
}
static int inside(struct range *l, uintptr_t p, size_t n) {
    for (; l; l = l->next) if (p >= l->p && p + n <= l->p + l->n) return 1;
    return 0;
}
static void unlink_range(struct range **l, struct range *r) {
    for (; *l; l = &(*l)->next) if (*l == r) { *l = r->next; return; }
}

/* ---- events ---- */
/* Reference-counted: queued records and waits keep the event alive after
   cuEventDestroy, which returns at once (CUDA defers the destruction of an
   event with pending work the same way). */
typedef struct event { long recorded, completed; int refs; } event;

static void event_unref(event *ev) { /* G held */
    if (--ev->refs == 0) free(ev);
}

/* ---- streams: a queue of ops run by one thread ---- */
enum { OP_COPY, OP_KERNEL, OP_RECORD, OP_WAIT, OP_SLEEP };
typedef struct op {
    int kind;
    void *dst; const void *src; size_t n;
    event *ev; long target;
    int kernel; uint64_t ksrc, kdst; int spitch, dpitch, w, h; float m[3], s[3];
    int sw, sh, bpp, mode, k[9], y_add, c_add, area; /* framebus_resample(_nv12) */
    long ms;
    struct op *next;
} op;
typedef struct stream {
    pthread_t thread; op *head, *tail; int busy; long slow; int quit;
} stream;

static void run_kernel(op *o);

static void *stream_main(void *arg) {
    stream *s = arg;
    pthread_mutex_lock(&G);
    for (;;) {
        while (!s->head && !s->quit) pthread_cond_wait(&GC, &G);
        if (!s->head && s->quit) break;
        op *o = s->head;
        s->busy = 1;
        long slow = s->slow > slow_ms ? s->slow : slow_ms;
        if (o->kind == OP_WAIT) {
            while (o->ev->completed < o->target) pthread_cond_wait(&GC, &G);
        }
        pthread_mutex_unlock(&G);
        if (o->kind != OP_RECORD && o->kind != OP_WAIT) sleep_ms(slow);
        if (o->kind == OP_COPY) memcpy(o->dst, o->src, o->n);
        if (o->kind == OP_KERNEL) run_kernel(o);
        if (o->kind == OP_SLEEP) sleep_ms(o->ms);
        pthread_mutex_lock(&G);
        if (o->kind == OP_RECORD && o->ev->completed < o->target) o->ev->completed = o->target;
        if (o->kind == OP_WAIT || o->kind == OP_RECORD) event_unref(o->ev);
        s->head = o->next;
        if (!s->head) s->tail = NULL;
        s->busy = 0;
        free(o);
        pthread_cond_broadcast(&GC);
    }
    pthread_mutex_unlock(&G);
    return NULL;
}

#define MAX_STREAMS 4096
static stream *streams[MAX_STREAMS];
static stream *default_stream;

static stream *new_stream(void) {
    stream *s = calloc(1, sizeof *s);
    pthread_create(&s->thread, NULL, stream_main, s);
    for (int i = 0; i < MAX_STREAMS; i++) if (!streams[i]) { streams[i] = s; break; }
    return s;
}

/* The stream behind a handle (G held); NULL for an unknown handle. */
static stream *get_stream(void *h) {
    uintptr_t v = (uintptr_t)h;
    if (v <= 2) {
        if (!default_stream) default_stream = new_stream();
        return default_stream;
    }
    for (int i = 0; i < MAX_STREAMS; i++) if (streams[i] == h) return streams[i];
    return NULL;
}

static void push(stream *s, op *o) {
    o->next = NULL;
    if (s->tail) s->tail->next = o; else s->head = o;
    s->tail = o;
    pthread_cond_broadcast(&GC);
}

static void drain(stream *s) {
    while (s->head || s->busy) pthread_cond_wait(&GC, &G);
}

/* ---- the driver API ---- */
/* The knobs' start values, read once when the library is loaded (so that a
   test's fake_cuda_set() before the first cuInit is not overwritten). */
__attribute__((constructor)) static void read_knobs(void) {
    n_devices = (int)env_long("FAKE_CUDA_DEVICES", 1);
    version = (int)env_long("FAKE_CUDA_VERSION", 12040);
    mem_total = (size_t)env_long("FAKE_CUDA_MEMORY", 1L << 30);
    fail_allocs = env_long("FAKE_CUDA_FAIL_ALLOCS", 0);
    slow_ms = env_long("FAKE_CUDA_SLOW_MS", 0);
    fail_copies = env_long("FAKE_CUDA_FAIL_COPIES", 0);
    fail_register = env_long("FAKE_CUDA_FAIL_REGISTER", 0);
    fail_compile = env_long("FAKE_CUDA_FAIL_COMPILE", 0);
}

CUresult cuInit(unsigned flags) {
    if (flags) return E_INVALID_VALUE;
    pthread_mutex_lock(&G);
    inited = 1;
    pthread_mutex_unlock(&G);
    return n_devices > 0 ? OK : E_NO_DEVICE;
}
CUresult cuDriverGetVersion(int *v) { *v = version; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = inited ? n_devices : 0; return inited ? OK : E_NOT_INIT; }
CUresult cuDeviceGet(int *d, int i) {
    if (i < 0 || i >= n_devices) return E_INVALID_DEVICE;
    *d = i; return OK;
}
CUresult cuDeviceGetName(char *name, int len, int d) {
    snprintf(name, (size_t)len, "framebus fake CUDA device %d", d); return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int d) {
    (void)d;
    *v = attr == 75 ? 8 : attr == 76 ? 6 : 0; return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *n, int d) { (void)d; *n = mem_total; return OK; }
CUresult cuDevicePrimaryCtxRetain(void **ctx, int d) { *ctx = (void *)(uintptr_t)(0x1000 + d); return OK; }
CUresult cuCtxSetCurrent(void *ctx) { (void)ctx; return inited ? OK : E_NOT_INIT; }
CUresult cuCtxSynchronize(void) {
    pthread_mutex_lock(&G);
    c_ctx_syncs++;
    for (int i = 0; i < MAX_STREAMS; i++) if (streams[i]) drain(streams[i]);
    pthread_mutex_unlock(&G);
    return OK;
}
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    pthread_mutex_lock(&G);
    CUresult r = OK;
    if (n == 0) r = E_INVALID_VALUE;
    else if (fail_allocs > 0) { fail_allocs--; r = E_OOM; }
    else if ((size_t)c_allocated_bytes + n > mem_total) r = E_OOM;
    else {
        void *m = aligned_alloc(256, (n + 255) / 256 * 256);
        if (!m) r = E_OOM;
        else {
            struct range *a = malloc(sizeof *a);
            a->p = (uintptr_t)m; a->n = n; a->next = allocs; allocs = a;
            c_allocated_bytes += (long)n; c_allocations++; c_allocs++;
            *p = (CUdeviceptr)(uintptr_t)m;
        }
    }
    pthread_mutex_unlock(&G);
    return r;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    pthread_mutex_lock(&G);
    struct range *a = find(allocs, (uintptr_t)p);
    if (!a) { pthread_mutex_unlock(&G); return E_INVALID_VALUE; }
    /* Like cudaFree, wait for the work queued so far (framebus's fences make
       this a no-op; it keeps a freed buffer from being read by a stream). */
    for (int i = 0; i < MAX_STREAMS; i++) if (streams[i]) drain(streams[i]);
    unlink_range(&allocs, a);
    c_allocated_bytes -= (long)a->n; c_allocations--; c_frees++;
    free((void *)a->p); free(a);
    pthread_mutex_unlock(&G);
    return OK;
}
CUresult cuMemGetInfo_v2(size_t *free_, size_t *total) {
    pthread_mutex_lock(&G);
    *free_ = mem_total - (size_t)c_allocated_bytes; *total = mem_total;
    pthread_mutex_unlock(&G);
    return OK;
}
enum { REGISTER_READ_ONLY = 8 };
/* 1 when every page of [p, p + n) is mapped writable, 0 when some page is
   mapped read-only, -1 when some page is not mapped (from /proc/self/maps). */
static int range_writable(uintptr_t p, size_t n) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[512], perms[8];
    unsigned long lo, hi;
    uintptr_t at = p, end = p + n;
    int writable = 1;
    while (at < end && fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3) continue;
        if (hi <= at || lo > at) continue;
        if (perms[1] != 'w') writable = 0;
        at = hi;
    }
    fclose(f);
    return at < end ? -1 : writable;
}
CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned flags) {
    int w = range_writable((uintptr_t)p, n);
    pthread_mutex_lock(&G);
    CUresult r = OK;
    c_register_calls++;
    if (fail_register) r = E_OOM;
    else if (w < 0 || (w == 0 && !(flags & REGISTER_READ_ONLY))) r = E_INVALID_VALUE;
    else if (find(regs, (uintptr_t)p)) r = E_ALREADY_REG;
    else {
        struct range *g = malloc(sizeof *g);
        g->p = (uintptr_t)p; g->n = n; g->next = regs; regs = g;
        g->readonly = (flags & REGISTER_READ_ONLY) != 0;
        c_registered_bytes += (long)n; c_registered_ranges++;
        c_readonly_ranges += g->readonly;
        /* Touch every page, like pinning does (and fail loudly on a bad range). */
        for (size_t i = 0; i < n; i += 4096) ((volatile char *)p)[i];
    }
    pthread_mutex_unlock(&G);
    return r;
}
CUresult cuMemHostUnregister(void *p) {
    pthread_mutex_lock(&G);
    c_unregister_calls++;
    struct range *g = find(regs, (uintptr_t)p);
    if (!g) { pthread_mutex_unlock(&G); return E_NOT_REG; }
    unlink_range(&regs, g);
    c_registered_bytes -= (long)g->n; c_registered_ranges--;
    c_readonly_ranges -= g->readonly;
    free(g);
    pthread_mutex_unlock(&G);
    return OK;
}
static CUresult copy(void *dst, const void *src, size_t n, void *hs, int htod) {
    pthread_mutex_lock(&G);
    stream *s = get_stream(hs);
    CUresult r = OK;
    if (!s) r = E_INVALID_HANDLE;
    else if (fail_copies) r = E_UNKNOWN;
    else if (htod ? !inside(allocs, (uintptr_t)dst, n) : !inside(allocs, (uintptr_t)src, n)) r = E_INVALID_VALUE;
    else {
        op *o = calloc(1, sizeof *o);
        o->kind = OP_COPY; o->dst = dst; o->src = src; o->n = n;
        c_copies++;
        push(s, o);
    }
    pthread_mutex_unlock(&G);
    return r;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, void *s) {
    return copy((void *)(uintptr_t)d, h, n, s, 1);
}
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, void *s) {
    return copy(h, (const void *)(uintptr_t)d, n, s, 0);
}
CUresult cuStreamCreate(void **s, unsigned flags) {
    (void)flags;
    pthread_mutex_lock(&G);
    *s = new_stream();
    pthread_mutex_unlock(&G);
    return OK;
}
CUresult cuStreamDestroy_v2(void *h) {
    pthread_mutex_lock(&G);
    stream *s = (uintptr_t)h <= 2 ? NULL : get_stream(h);
    if (!s) { pthread_mutex_unlock(&G); return E_INVALID_HANDLE; }
    for (int i = 0; i < MAX_STREAMS; i++) if (streams[i] == s) streams[i] = NULL;
    s->quit = 1;
    pthread_cond_broadcast(&GC);
    pthread_mutex_unlock(&G);
    pthread_join(s->thread, NULL);
    free(s);
    return OK;
}
CUresult cuEventCreate(void **e, unsigned flags) {
    (void)flags;
    event *ev = calloc(1, sizeof(event));
    ev->refs = 1;
    *e = ev;
    return OK;
}
CUresult cuEventDestroy_v2(void *e) {
    pthread_mutex_lock(&G);
    event_unref(e);
    pthread_mutex_unlock(&G);
    return OK;
}
CUresult cuEventRecord(void *e, void *hs) {
    pthread_mutex_lock(&G);
    stream *s = get_stream(hs);
    if (!s) { pthread_mutex_unlock(&G); return E_INVALID_HANDLE; }
    event *ev = e;
    op *o = calloc(1, sizeof *o);
    o->kind = OP_RECORD; o->ev = ev; o->target = ++ev->recorded;
    ev->refs++;
    push(s, o);
    pthread_mutex_unlock(&G);
    return OK;
}
CUresult cuEventQuery(void *e) {
    pthread_mutex_lock(&G);
    event *ev = e;
    CUresult r = ev->completed >= ev->recorded ? OK : E_NOT_READY;
    pthread_mutex_unlock(&G);
    return r;
}
CUresult cuEventSynchronize(void *e) {
    pthread_mutex_lock(&G);
    event *ev = e;
    while (ev->completed < ev->recorded) pthread_cond_wait(&GC, &G);
    pthread_mutex_unlock(&G);
    return OK;
}
CUresult cuStreamWaitEvent(void *hs, void *e, unsigned flags) {
    (void)flags;
    pthread_mutex_lock(&G);
    stream *s = get_stream(hs);
    if (!s) { pthread_mutex_unlock(&G); return E_INVALID_HANDLE; }
    event *ev = e;
    op *o = calloc(1, sizeof *o);
    o->kind = OP_WAIT; o->ev = ev; o->target = ev->recorded;
    ev->refs++;
    c_stream_waits++;
    push(s, o);
    pthread_mutex_unlock(&G);
    return OK;
}
CUresult cuStreamSynchronize(void *hs) {
    pthread_mutex_lock(&G);
    stream *s = get_stream(hs);
    if (s) drain(s);
    pthread_mutex_unlock(&G);
    return s ? OK : E_INVALID_HANDLE;
}

#define N_KERNELS 6
static const char *KERNELS[N_KERNELS] = {
    "framebus_bgra_to_rgb", "framebus_bgra_to_bgr", "framebus_bgra_to_gray",
    "framebus_bgra_to_rgb_f32_chw", "framebus_resample", "framebus_resample_nv12",
};
CUresult cuModuleLoadData(void **m, const void *image) {
    if (!image || !strstr(image, "framebus_bgra_to_")) return E_INVALID_IMAGE;
    *m = (void *)0x2000;
    return OK;
}
CUresult cuModuleGetFunction(void **f, void *m, const char *name) {
    (void)m;
    for (int i = 0; i < N_KERNELS; i++)
        if (!strcmp(name, KERNELS[i])) { *f = (void *)(uintptr_t)(i + 1); return OK; }
    return E_NOT_FOUND;
}
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shmem, void *hs, void **p,
                        void **extra) {
    (void)gz; (void)bz; (void)shmem; (void)extra;
    uintptr_t k = (uintptr_t)f;
    if (k < 1 || k > N_KERNELS || !p) return E_INVALID_HANDLE;
    pthread_mutex_lock(&G);
    stream *s = get_stream(hs);
    if (!s) { pthread_mutex_unlock(&G); return E_INVALID_HANDLE; }
    op *o = calloc(1, sizeof *o);
    o->kind = OP_KERNEL; o->kernel = (int)k - 1;
    int src_rows, cols;
    if (o->kernel < 4) {
        /* (src, src_pitch, dst, dst_pitch, w, h, mean[3], std[3]) */
        o->ksrc = *(uint64_t *)p[0]; o->spitch = *(int *)p[1];
        o->kdst = *(uint64_t *)p[2]; o->dpitch = *(int *)p[3];
        o->w = *(int *)p[4]; o->h = *(int *)p[5];
        for (int i = 0; i < 3; i++) { o->m[i] = *(float *)p[6 + i]; o->s[i] = *(float *)p[9 + i]; }
        src_rows = o->h; cols = o->w;
    } else {
        /* (src, src_pitch, sw, sh, bpp, dst, dst_pitch, w, h, then
           mode, mean[3], std[3] | k[9], y_add, c_add) */
        o->ksrc = *(uint64_t *)p[0]; o->spitch = *(int *)p[1];
        o->sw = *(int *)p[2]; o->sh = *(int *)p[3]; o->bpp = *(int *)p[4];
        o->kdst = *(uint64_t *)p[5]; o->dpitch = *(int *)p[6];
        o->w = *(int *)p[7]; o->h = *(int *)p[8];
        if (o->kernel == 4) {
            o->mode = *(int *)p[9];
            for (int i = 0; i < 3; i++) { o->m[i] = *(float *)p[10 + i]; o->s[i] = *(float *)p[13 + i]; }
            o->area = *(int *)p[16];
            cols = o->w;
        } else {
            for (int i = 0; i < 9; i++) o->k[i] = *(int *)p[9 + i];
            o->y_add = *(int *)p[18]; o->c_add = *(int *)p[19];
            o->area = *(int *)p[20];
            cols = o->w / 2;
        }
        src_rows = o->sh;
        if (o->sw < 1 || o->sh < 1 || o->w < 1 || o->h < 1 || (long)o->sw * o->bpp > o->spitch ||
            o->mode < 0 || o->mode > 4 || (o->kernel == 5 && (o->w % 2 || o->h % 2 || o->bpp != 4)) ||
            (o->kernel == 4 && o->mode > 0 && o->bpp != 4)) {
            free(o); pthread_mutex_unlock(&G); return E_INVALID_VALUE;
        }
    }
    /* The grid must cover the columns (rows loop inside the real kernels) and
       stay within CUDA's limits. */
    if ((long)gx * bx < cols || gy < 1 || gy > 65535 || (long)bx * by > 1024 ||
        !inside(allocs, (uintptr_t)o->ksrc, (size_t)o->spitch * src_rows)) {
        free(o); pthread_mutex_unlock(&G); return E_INVALID_VALUE;
    }
    c_launches++;
    push(s, o);
    pthread_mutex_unlock(&G);
    return OK;
}

/* Bilinear taps of output i (framebus_kernels' Axis::bilinear). */
static void axis(int i, int n_in, int n_out, int *i0, int *i1, int *f) {
    long long num = (2LL * i + 1) * n_in - n_out, den = 2LL * n_out;
    if (num <= 0) { *i0 = *i1 = 0; *f = 0; return; }
    long long x0 = num / den;
    int fx = (int)((num % den) * 2048 / den);
    if (x0 + 1 >= n_in || fx == 0) { *i0 = *i1 = (int)(x0 < n_in - 1 ? x0 : n_in - 1); *f = 0; return; }
    *i0 = (int)x0; *i1 = (int)x0 + 1; *f = fx;
}
/* Area taps of output i (framebus_kernels' Axis::area): first source index,
   count, each weight floor(overlap * 2048 / n_in), the remainder to the first
   tap of the largest overlap. */
static int area_axis(int i, int n_in, int n_out, unsigned *w) {
    long long lo = (long long)i * n_in, hi = lo + n_in, a = lo / n_out, b = (hi - 1) / n_out;
    long long best = -1; int at = 0, sum = 0;
    for (long long j = a; j <= b; j++) {
        long long e = (j + 1) * n_out < hi ? (j + 1) * n_out : hi, s = j * n_out > lo ? j * n_out : lo;
        w[j - a] = (unsigned)((e - s) * 2048 / n_in);
        sum += (int)w[j - a];
        if (e - s > best) { best = e - s; at = (int)(j - a); }
    }
    w[at] += (unsigned)(2048 - sum);
    return (int)a;
}
/* Byte c of the resampled pixel (x, y) of a resample op. */
static int sample(const op *o, int x, int y, int c) {
    const unsigned char *src = (const unsigned char *)(uintptr_t)o->ksrc;
    if (o->area) {
        /* at most ceil(n_in / n_out) + 1 taps an axis */
        int nx = o->sw / o->w + 2, ny = o->sh / o->h + 2;
        unsigned *wx = calloc((size_t)nx, sizeof *wx), *wy = calloc((size_t)ny, sizeof *wy);
        int x0 = area_axis(x, o->sw, o->w, wx), y0 = area_axis(y, o->sh, o->h, wy);
        unsigned acc = 0;
        for (int ty = 0; ty < ny && y0 + ty < o->sh; ty++) {
            const unsigned char *row = src + (size_t)(y0 + ty) * o->spitch;
            unsigned hs = 0;
            for (int tx = 0; tx < nx && x0 + tx < o->sw; tx++) hs += wx[tx] * row[(size_t)(x0 + tx) * o->bpp + c];
            acc += wy[ty] * hs;
        }
        free(wx); free(wy);
        return (int)((acc + (1u << 21)) >> 22);
    }
    int x0, x1, fx, y0, y1, fy;
    axis(x, o->sw, o->w, &x0, &x1, &fx);
    axis(y, o->sh, o->h, &y0, &y1, &fy);
    const unsigned char *r0 = src + (size_t)y0 * o->spitch, *r1 = src + (size_t)y1 * o->spitch;
    unsigned a = (2048u - fx) * r0[x0 * o->bpp + c] + (unsigned)fx * r0[x1 * o->bpp + c];
    unsigned b = (2048u - fx) * r1[x0 * o->bpp + c] + (unsigned)fx * r1[x1 * o->bpp + c];
    return (int)(((2048u - fy) * a + (unsigned)fy * b + (1u << 21)) >> 22);
}
static unsigned char clamp8(int v) { return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v); }

static void run_resample(op *o) {
    unsigned char *dst = (unsigned char *)(uintptr_t)o->kdst;
    size_t plane = (size_t)o->w * o->h;
    if (o->kernel == 5) {
        unsigned char *uvp = dst + (size_t)o->h * o->dpitch;
        for (int by = 0; 2 * by < o->h; by++)
            for (int bx = 0; 2 * bx < o->w; bx++) {
                int sum[3] = {0, 0, 0};
                for (int j = 0; j < 2; j++)
                    for (int k = 0; k < 2; k++) {
                        int x = 2 * bx + k, y = 2 * by + j;
                        int rgb[3] = {sample(o, x, y, 2), sample(o, x, y, 1), sample(o, x, y, 0)};
                        int v = o->y_add;
                        for (int c = 0; c < 3; c++) { v += o->k[c] * rgb[c]; sum[c] += rgb[c]; }
                        dst[(size_t)y * o->dpitch + x] = clamp8(v >> 15);
                    }
                int u = o->c_add, v = o->c_add;
                for (int c = 0; c < 3; c++) { u += o->k[3 + c] * sum[c]; v += o->k[6 + c] * sum[c]; }
                unsigned char *uv = uvp + (size_t)by * o->dpitch + 2 * (size_t)bx;
                uv[0] = clamp8(u >> 17); uv[1] = clamp8(v >> 17);
            }
        return;
    }
    for (int y = 0; y < o->h; y++)
        for (int x = 0; x < o->w; x++) {
            unsigned char *d = dst + (size_t)y * o->dpitch;
            if (o->mode == 0) {
                for (int c = 0; c < o->bpp; c++) d[(size_t)x * o->bpp + c] = (unsigned char)sample(o, x, y, c);
                continue;
            }
            int b = sample(o, x, y, 0), g = sample(o, x, y, 1), r = sample(o, x, y, 2);
            switch (o->mode) {
            case 1: d[3 * x] = r; d[3 * x + 1] = g; d[3 * x + 2] = b; break;
            case 2: d[3 * x] = b; d[3 * x + 1] = g; d[3 * x + 2] = r; break;
            case 3: d[x] = clamp8((9798 * r + 19234 * g + 3736 * b + 16384) >> 15); break;
            case 4: {
                volatile float *out = (float *)dst;
                size_t i = (size_t)y * o->w + x;
                int rgb[3] = {r, g, b};
                for (int c = 0; c < 3; c++) {
                    volatile float v = (float)rgb[c] / 255.0f;
                    v = v - o->m[c];
                    out[c * plane + i] = v / o->s[c];
                }
                break;
            }
            }
        }
}

/* The C reference of framebus's CPU kernels (framebus-kernels). */
static void run_kernel(op *o) {
    if (o->kernel >= 4) { run_resample(o); return; }
    const unsigned char *src = (const unsigned char *)(uintptr_t)o->ksrc;
    unsigned char *dst = (unsigned char *)(uintptr_t)o->kdst;
    size_t plane = (size_t)o->w * o->h;
    for (int y = 0; y < o->h; y++)
        for (int x = 0; x < o->w; x++) {
            const unsigned char *p = src + (size_t)y * o->spitch + 4 * (size_t)x;
            unsigned char *d = dst + (size_t)y * o->dpitch;
            switch (o->kernel) {
            case 0: d[3 * x] = p[2]; d[3 * x + 1] = p[1]; d[3 * x + 2] = p[0]; break;
            case 1: d[3 * x] = p[0]; d[3 * x + 1] = p[1]; d[3 * x + 2] = p[2]; break;
            case 2: {
                int v = (9798 * p[2] + 19234 * p[1] + 3736 * p[0] + 16384) >> 15;
                d[x] = (unsigned char)(v > 255 ? 255 : v);
                break;
            }
            case 3: {
                volatile float *out = (float *)dst;
                size_t i = (size_t)y * o->w + x;
                for (int c = 0; c < 3; c++) {
                    volatile float v = (float)p[2 - c] / 255.0f;
                    v = v - o->m[c];
                    out[c * plane + i] = v / o->s[c];
                }
                break;
            }
            }
        }
}

static const char *NAMES[][2] = {
    {"0", "CUDA_SUCCESS"}, {"1", "CUDA_ERROR_INVALID_VALUE"},
    {"2", "CUDA_ERROR_OUT_OF_MEMORY"}, {"3", "CUDA_ERROR_NOT_INITIALIZED"},
    {"100", "CUDA_ERROR_NO_DEVICE"}, {"101", "CUDA_ERROR_INVALID_DEVICE"},
    {"200", "CUDA_ERROR_INVALID_IMAGE"}, {"400", "CUDA_ERROR_INVALID_HANDLE"},
    {"500", "CUDA_ERROR_NOT_FOUND"}, {"600", "CUDA_ERROR_NOT_READY"},
    {"712", "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED"},
    {"713", "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED"}, {"999", "CUDA_ERROR_UNKNOWN"},
};
CUresult cuGetErrorName(CUresult r, const char **s) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", r);
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        if (!strcmp(buf, NAMES[i][0])) { *s = NAMES[i][1]; return OK; }
    return E_INVALID_VALUE;
}

/* ---- fake NVRTC ---- */
typedef struct { char *src; int ok; } program;
int nvrtcVersion(int *a, int *b) { *a = 12; *b = 9; return 0; }
int nvrtcCreateProgram(void **p, const char *src, const char *name, int nh,
                       const char *const *h, const char *const *inc) {
    (void)name; (void)nh; (void)h; (void)inc;
    program *pr = calloc(1, sizeof *pr);
    pr->src = strdup(src);
    *p = pr;
    return 0;
}
int nvrtcCompileProgram(void *p, int n, const char *const *opts) {
    program *pr = p;
    int arch = 0;
    for (int i = 0; i < n; i++) if (!strncmp(opts[i], "--gpu-architecture=", 19)) arch = 1;
    pr->ok = arch && !fail_compile;
    for (int i = 0; i < N_KERNELS; i++) if (!strstr(pr->src, KERNELS[i])) pr->ok = 0;
    return pr->ok ? 0 : 6; /* NVRTC_ERROR_COMPILATION */
}
int nvrtcGetPTXSize(void *p, size_t *n) { *n = strlen(((program *)p)->src) + 1; return 0; }
int nvrtcGetPTX(void *p, char *out) { strcpy(out, ((program *)p)->src); return 0; }
static const char LOG[] = "fake NVRTC: compilation failed (FAKE_CUDA_FAIL_COMPILE)";
int nvrtcGetProgramLogSize(void *p, size_t *n) { *n = ((program *)p)->ok ? 1 : sizeof LOG; return 0; }
int nvrtcGetProgramLog(void *p, char *out) { strcpy(out, ((program *)p)->ok ? "" : LOG); return 0; }
int nvrtcDestroyProgram(void **p) {
    program *pr = *p;
    free(pr->src); free(pr); *p = NULL;
    return 0;
}

/* ---- test controls ---- */
long fake_cuda_get(const char *what) {
    static const struct { const char *n; long *v; } C[] = {
        {"registered_bytes", &c_registered_bytes}, {"registered_ranges", &c_registered_ranges},
        {"allocated_bytes", &c_allocated_bytes}, {"allocations", &c_allocations},
        {"allocs", &c_allocs}, {"frees", &c_frees}, {"launches", &c_launches},
        {"copies", &c_copies}, {"ctx_syncs", &c_ctx_syncs}, {"stream_waits", &c_stream_waits},
        {"register_calls", &c_register_calls}, {"unregister_calls", &c_unregister_calls},
        {"readonly_ranges", &c_readonly_ranges},
    };
    long v = -1;
    pthread_mutex_lock(&G);
    for (size_t i = 0; i < sizeof C / sizeof *C; i++) if (!strcmp(what, C[i].n)) v = *C[i].v;
    pthread_mutex_unlock(&G);
    return v;
}
int fake_cuda_set(const char *what, long v) {
    int ok = 1;
    pthread_mutex_lock(&G);
    if (!strcmp(what, "fail_allocs")) fail_allocs = v;
    else if (!strcmp(what, "slow_ms")) slow_ms = v;
    else if (!strcmp(what, "fail_copies")) fail_copies = v;
    else if (!strcmp(what, "fail_register")) fail_register = v;
    else if (!strcmp(what, "fail_compile")) fail_compile = v;
    else ok = 0;
    pthread_mutex_unlock(&G);
    return ok;
}
int fake_cuda_set_stream_slow(void *hs, long ms) {
    pthread_mutex_lock(&G);
    stream *s = get_stream(hs);
    if (s) s->slow = ms;
    pthread_mutex_unlock(&G);
    return s ? 0 : -1;
}
/* Queue a sleep on a stream: a consumer kernel that runs long. */
int fake_cuda_stream_sleep(void *hs, long ms) {
    pthread_mutex_lock(&G);
    stream *s = get_stream(hs);
    if (s) {
        op *o = calloc(1, sizeof *o);
        o->kind = OP_SLEEP; o->ms = ms;
        push(s, o);
    }
    pthread_mutex_unlock(&G);
    return s ? 0 : -1;
}
