/*
 * cschurn: TCP connection-churn generator for connscope's benchmark.
 *
 * Compiled at bench time (cc -O2 -pthread). A Python loop tops out far below
 * what the kernel can do; this saturates two cores with connect() + close().
 *
 *   cschurn loop    --port P [--threads T] [--rate R] [--duration S] [--dests N]
 *   cschurn refused --port P [--threads T] [--rate R] [--duration S]
 *   cschurn server  --addr A --port P [--threads T] [--duration S]
 *   cschurn client  --addr A --port P [--threads T] [--rate R] [--duration S]
 *
 * loop: a listener on P and T client threads in this process. Clients connect
 *   to 127.0.0.1..127.0.0.N (--dests: each destination address has its own
 *   ephemeral port space, so a high rate does not run out of ports while
 *   TIME_WAIT sockets wait for reuse) and close at once; server threads
 *   accept, read until EOF, close. The client closes first (TIME_WAIT here,
 *   as an application without a connection pool does).
 * refused: connects to 127.0.0.1:P where nothing listens (ECONNREFUSED).
 * server / client: the two halves, for a namespace pair. The server stops at
 *   SIGTERM or after --duration.
 *
 * --rate R: total target connections per second, split over the threads and
 * paced on absolute deadlines (0 = as fast as possible). A thread that falls
 * more than 50 ms behind drops the backlog instead of bursting, so the
 * achieved rate shows the shortfall. Connects are bounded by SO_SNDTIMEO
 * (--timeout-ms), which blocking connect() honours.
 *
 * Prints one JSON object on stdout at the end: attempts, ok, failed,
 * errors by errno name, accepted (server side), elapsed_s, rate (ok per
 * second, or attempts per second in refused mode). Its comm is "cschurn"
 * in every thread, which the bench uses to find it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_ERRNO 256
#define BACKLOG 4096

static const char *mode;
static const char *addr = "127.0.0.1";
static int port, threads = 2, dests = 1, timeout_ms = 3000;
static double rate, duration = 5.0;

static atomic_long attempts, ok, failed, accepted;
static atomic_long errors[MAX_ERRNO];
static atomic_int stop_clients, stop_servers;
static int listen_fd = -1;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
    struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (time_t)t) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void die(const char *what) {
    fprintf(stderr, "cschurn: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *client_thread(void *arg) {
    long idx = (long)arg;
    double interval = rate > 0 ? threads / rate : 0;
    double next = now_s() + (interval * idx) / threads;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    uint32_t base;
    if (inet_pton(AF_INET, addr, &base) != 1) {
        fprintf(stderr, "cschurn: bad --addr %s\n", addr);
        exit(2);
    }
    for (long k = idx; !atomic_load_explicit(&stop_clients, memory_order_relaxed); k += threads) {
        if (interval > 0) {
            double t = now_s();
            if (t < next)
                sleep_until(next);
            else if (t > next + 0.05)
                next = t; /* too far behind: do not burst */
            next += interval;
        }
        /* Loop mode: stay within the accept backlog. An overflowing backlog drops
         * the SYN and stalls this connect for the 1 s SYN retransmit timeout. */
        while (listen_fd >= 0 && atomic_load_explicit(&ok, memory_order_relaxed) -
                                         atomic_load_explicit(&accepted, memory_order_relaxed) > BACKLOG / 2)
            sched_yield();
        sa.sin_addr.s_addr = htonl(ntohl(base) + (uint32_t)(k % dests));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket");
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        atomic_fetch_add_explicit(&attempts, 1, memory_order_relaxed);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            atomic_fetch_add_explicit(&ok, 1, memory_order_relaxed);
        } else {
            int e = errno < MAX_ERRNO ? errno : 0;
            atomic_fetch_add_explicit(&failed, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&errors[e], 1, memory_order_relaxed);
        }
        close(fd);
    }
    return NULL;
}

static void *server_thread(void *arg) {
    (void)arg;
    char buf[256];
    struct timeval tv = {.tv_sec = 5};
    while (!atomic_load(&stop_servers)) {
        int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break; /* shutdown() of the listener wakes us with EINVAL */
        }
        atomic_fetch_add_explicit(&accepted, 1, memory_order_relaxed);
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* a peer that vanished */
        while (recv(c, buf, sizeof buf, 0) > 0)
            ;
        close(c);
    }
    return NULL;
}

static void start_listener(const char *bind_addr) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "cschurn: bad address %s\n", bind_addr);
        exit(2);
    }
    int one = 1;
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0)
        die("socket");
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    if (listen(listen_fd, BACKLOG) < 0)
        die("listen");
}

static void stop_listener(pthread_t *srv, int n) {
    atomic_store(&stop_servers, 1);
    shutdown(listen_fd, SHUT_RDWR);
    for (int i = 0; i < n; i++)
        pthread_join(srv[i], NULL);
    close(listen_fd);
}

static void run_clients(pthread_t *cli) {
    for (long i = 0; i < threads; i++)
        if (pthread_create(&cli[i], NULL, client_thread, (void *)i) != 0)
            die("pthread_create");
    sleep_until(now_s() + duration);
    atomic_store(&stop_clients, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(cli[i], NULL);
}

static void usage(void) {
    fprintf(stderr, "usage: cschurn loop|refused|server|client --port P [--addr A] [--threads T] "
                    "[--rate R] [--duration S] [--dests N] [--timeout-ms MS]\n");
    exit(2);
}

static void parse(int argc, char **argv) {
    if (argc < 2)
        usage();
    mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(o, "--port")) port = atoi(v);
        else if (!strcmp(o, "--addr")) addr = v;
        else if (!strcmp(o, "--threads")) threads = atoi(v);
        else if (!strcmp(o, "--rate")) rate = atof(v);
        else if (!strcmp(o, "--duration")) duration = atof(v);
        else if (!strcmp(o, "--dests")) dests = atoi(v);
        else if (!strcmp(o, "--timeout-ms")) timeout_ms = atoi(v);
        else usage();
    }
    if (port <= 0 || port > 65535 || threads < 1 || threads > MAX_THREADS || dests < 1 || dests > 250)
        usage();
}

static void print_result(double elapsed) {
    printf("{\"mode\":\"%s\",\"port\":%d,\"threads\":%d,\"target_rate\":%.0f,\"attempts\":%ld,"
           "\"ok\":%ld,\"failed\":%ld,\"accepted\":%ld,\"elapsed_s\":%.4f,\"errors\":{",
           mode, port, threads, rate, attempts, ok, failed, accepted, elapsed);
    int first = 1;
    for (int e = 0; e < MAX_ERRNO; e++) {
        if (!errors[e])
            continue;
        printf("%s\"%s\":%ld", first ? "" : ",", strerrorname_np(e) ? strerrorname_np(e) : "E?", errors[e]);
        first = 0;
    }
    long n = !strcmp(mode, "refused") ? attempts : (!strcmp(mode, "server") ? accepted : ok);
    printf("},\"rate\":%.1f}\n", elapsed > 0 ? n / elapsed : 0.0);
    fflush(stdout);
}

int main(int argc, char **argv) {
    parse(argc, argv);
    prctl(PR_SET_NAME, "cschurn", 0, 0, 0);
    prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0); /* 10k/s pacing needs ~100 us sleeps */
    signal(SIGPIPE, SIG_IGN);
    pthread_t cli[MAX_THREADS], srv[MAX_THREADS];
    double t0 = now_s(), elapsed;

    if (!strcmp(mode, "loop")) {
        start_listener(dests > 1 ? "0.0.0.0" : addr);
        for (int i = 0; i < threads; i++)
            if (pthread_create(&srv[i], NULL, server_thread, NULL) != 0)
                die("pthread_create");
        t0 = now_s();
        run_clients(cli);
        elapsed = now_s() - t0;
        /* every successful connect is accepted; wait (bounded) for the server side */
        for (double end = now_s() + 2; accepted < ok && now_s() < end;)
            usleep(1000);
        stop_listener(srv, threads);
    } else if (!strcmp(mode, "refused") || !strcmp(mode, "client")) {
        t0 = now_s();
        run_clients(cli);
        elapsed = now_s() - t0;
    } else if (!strcmp(mode, "server")) {
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &term, NULL); /* inherited by the threads: only sigtimedwait sees it */
        start_listener(addr);
        for (int i = 0; i < threads; i++)
            if (pthread_create(&srv[i], NULL, server_thread, NULL) != 0)
                die("pthread_create");
        printf("{\"event\":\"listening\",\"port\":%d}\n", port);
        fflush(stdout);
        /* until SIGTERM or --duration, whichever comes first */
        struct timespec limit = {.tv_sec = (time_t)duration,
                                 .tv_nsec = (long)((duration - (time_t)duration) * 1e9)};
        while (sigtimedwait(&term, NULL, &limit) < 0 && errno == EINTR)
            ;
        elapsed = now_s() - t0;
        stop_listener(srv, threads);
    } else {
        usage();
    }
    print_result(elapsed);
    return 0;
}
