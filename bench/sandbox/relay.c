// bench/sandbox reference point: the least a userspace TCP relay can cost on this machine.
// Accepts on 127.0.0.1:<listen port>, connects to <host>:<port>, and copies both ways with
// blocking read/write (256 KiB) on a thread per direction: no policy, no event loop, no JS.
// What keel's proxy does to the bytes, minus everything keel adds. Loopback only.
//
//   cc -O2 -pthread -o relay relay.c && ./relay 0 127.0.0.8 443   (prints the port it listens on)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in upstream;

struct dir {
  int from, to;
};

static void *pump(void *p) {
  struct dir *d = p;
  char *buf = malloc(262144);
  for (;;) {
    ssize_t n = read(d->from, buf, 262144);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(d->to, buf + off, (size_t)(n - off));
      if (w <= 0) goto out;
      off += w;
    }
  }
out:
  shutdown(d->to, SHUT_WR);
  free(buf);
  return NULL;
}

static void *serve(void *p) {
  int a = (int)(long)p, one = 1;
  int b = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(b, (struct sockaddr *)&upstream, sizeof upstream) == 0) {
    struct dir up = {a, b}, down = {b, a};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, pump, &up);
    pthread_create(&t2, NULL, pump, &down);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
  }
  close(a);
  close(b);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) return 2;
  upstream.sin_family = AF_INET;
  upstream.sin_port = htons((unsigned short)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &upstream.sin_addr) != 1) return 2;
  struct sockaddr_in l = {0};
  l.sin_family = AF_INET;
  l.sin_port = htons((unsigned short)atoi(argv[1]));
  inet_pton(AF_INET, "127.0.0.1", &l.sin_addr);
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s, (struct sockaddr *)&l, sizeof l) != 0 || listen(s, 128) != 0) return 1;
  socklen_t len = sizeof l;
  getsockname(s, (struct sockaddr *)&l, &len);
  printf("%d\n", ntohs(l.sin_port)); // the port, for a listen port of 0
  fflush(stdout);
  for (;;) {
    int a = accept(s, NULL, NULL);
    if (a < 0) continue;
    pthread_t t;
    pthread_create(&t, NULL, serve, (void *)(long)a);
    pthread_detach(t);
  }
}
