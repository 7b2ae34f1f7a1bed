/* The raw pipe limit for bench_pipe.py: write N frames from 4 rotating, pre-filled
 * buffers to stdout (a pipe into the sink) with plain write(2) of whole frames,
 * after growing the pipe with F_SETPIPE_SZ. No Python, no threads: what the
 * kernel pipe and the sink can take. With "vmsplice" as the 4th argument the
 * pages are vmspliced instead of copied (measured for docs/pipe.md only: it is
 * not safe when buffers are reused, see there).
 * CHUNK (default 0 = whole frame) caps the bytes per call. It starts writing when
 * it reads one byte from stdin (so its start-up and page faults are not timed).
 * Usage: pipe_raw FRAME_BYTES N_FRAMES PIPE_SIZE [write|vmsplice] [CHUNK] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s FRAME_BYTES N_FRAMES PIPE_SIZE [write|vmsplice]\n", argv[0]); return 2; }
    size_t len = strtoull(argv[1], 0, 10);
    long n = strtol(argv[2], 0, 10);
    int psize = atoi(argv[3]);
    int use_vmsplice = argc > 4 && strcmp(argv[4], "vmsplice") == 0;
    size_t chunk = argc > 5 ? strtoull(argv[5], 0, 10) : 0;
    if (chunk == 0) chunk = len;
    if (psize > 0) fcntl(1, F_SETPIPE_SZ, psize);
    char *buf[4];
    for (int i = 0; i < 4; i++) {
        if (posix_memalign((void **)&buf[i], 4096, len)) return 3;
        memset(buf[i], 128 + i, len);
    }
    /* Ready: wait for the go byte on stdin so start-up is not timed. */
    char go;
    if (read(0, &go, 1) != 1) return 4;
    for (long f = 0; f < n; f++) {
        char *p = buf[f % 4];
        size_t done = 0;
        while (done < len) {
            ssize_t r;
            size_t want = len - done < chunk ? len - done : chunk;
            if (use_vmsplice) {
                struct iovec iov = { p + done, want };
                r = vmsplice(1, &iov, 1, 0);
            } else {
                r = write(1, p + done, want);
            }
            if (r < 0) { if (errno == EINTR) continue; perror("write"); return 1; }
            done += (size_t)r;
        }
    }
    return 0;
}
