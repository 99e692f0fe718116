/* An HTTPS client linked with OpenSSL's static libraries (libssl.a, libcrypto.a), for the eBPF
   TLS tests: connects when a first path arrives on its standard input (one a line), then
   makes a keep-alive GET of each, alternating SSL_write/SSL_read and SSL_write_ex/SSL_read_ex,
   and prints each response's status line; exits at the end of its input.
       openssl_static_client PORT < paths */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int tls_write(SSL *ssl, const char *data, size_t size, int ex) {
    if (ex) {
        size_t written = 0;
        return SSL_write_ex(ssl, data, size, &written) == 1 && written == size;
    }
    return SSL_write(ssl, data, (int)size) == (int)size;
}

static long tls_read(SSL *ssl, char *buf, size_t size, int ex) {
    if (ex) {
        size_t got = 0;
        return SSL_read_ex(ssl, buf, size, &got) == 1 ? (long)got : -1;
    }
    return SSL_read(ssl, buf, (int)size);
}

/* Reads one response (headers, then Content-Length bytes); prints its status line. */
static int read_response(SSL *ssl, int ex) {
    static char buf[65536];
    size_t have = 0;
    buf[0] = 0;
    char *end = NULL;
    while (!(end = strstr(buf, "\r\n\r\n"))) {
        long got = tls_read(ssl, buf + have, sizeof(buf) - 1 - have, ex);
        if (got <= 0)
            return -1;
        have += got;
        buf[have] = 0;
    }
    const char *length = strcasestr(buf, "content-length:");
    size_t body = length ? strtoul(length + 15, NULL, 10) : 0;
    size_t head = end + 4 - buf;
    printf("%.*s\n", (int)(strchr(buf, '\r') - buf), buf);
    while (have < head + body) {
        long got = tls_read(ssl, buf + have, sizeof(buf) - 1 - have, ex);
        if (got <= 0)
            return -1;
        have += got;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT < paths\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    char path[512];
    if (!fgets(path, sizeof(path), stdin))
        return 0;
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        perror("connect");
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, sock);
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    int number = 0;
    do {
        path[strcspn(path, "\r\n")] = 0;
        char request[1024];
        int ex = number++ % 2;
        int n = snprintf(request, sizeof(request),
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: static-openssl\r\n\r\n",
                         path);
        if (!tls_write(ssl, request, n, ex) || read_response(ssl, ex) != 0) {
            fprintf(stderr, "request %s failed\n", path);
            return 1;
        }
    } while (fgets(path, sizeof(path), stdin));
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(sock);
    return 0;
}
