/* The C ABI from C: every handle, every failure path, the non-blocking form, and a
 * three-member cluster on the embedded sim. Built and run under AddressSanitizer and
 * LeakSanitizer by `cargo xtask lua`; exits non-zero on the first failed check. */

#define _DEFAULT_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "consul_ha.h"

static int checks = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        checks++;                                                                \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#define EXPECT(call, want)                                                       \
    do {                                                                         \
        ConsulHaStatus got_ = (call);                                            \
        checks++;                                                                \
        if (got_ != (want)) {                                                    \
            fprintf(stderr, "%s:%d: %s returned %s, not %s\n", __FILE__, __LINE__, #call, \
                    consul_ha_status_name(got_), consul_ha_status_name(want));   \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_client(void) {
    ConsulHaClient *c = NULL;
    char *err = NULL;
    EXPECT(consul_ha_client_new(NULL, 5000, true, &c, &err), CONSUL_HA_STATUS_OK);
    CHECK(c != NULL && err == NULL);

    /* KV, with a value holding a NUL byte. */
    EXPECT(consul_ha_kv_put(c, "c-test/k", (const uint8_t *)"a\0b", 3, 0), CONSUL_HA_STATUS_OK);
    char *value = NULL;
    size_t len = 0;
    EXPECT(consul_ha_kv_get(c, "c-test/k", 0, &value, &len), CONSUL_HA_STATUS_OK);
    CHECK(len == 3 && memcmp(value, "a\0b", 3) == 0 && value[3] == '\0');
    consul_ha_free(value);
    EXPECT(consul_ha_kv_delete(c, "c-test/k", 0), CONSUL_HA_STATUS_OK);
    EXPECT(consul_ha_kv_get(c, "c-test/k", 0, &value, &len), CONSUL_HA_STATUS_NOT_FOUND);
    CHECK(value == NULL);
    CHECK(strcmp(consul_ha_client_error(c), "") == 0);

    /* Bad arguments: a status and a message, never a crash. */
    EXPECT(consul_ha_kv_get(c, NULL, 0, &value, &len), CONSUL_HA_STATUS_NULL_ARGUMENT);
    CHECK(strcmp(consul_ha_client_error(c), "key is NULL") == 0);
    EXPECT(consul_ha_kv_get(c, "\xff\xfe", 0, &value, &len), CONSUL_HA_STATUS_INVALID_UTF8);
    CHECK(strstr(consul_ha_client_error(c), "key is not UTF-8") != NULL);
    EXPECT(consul_ha_kv_get(c, "k", 0, NULL, &len), CONSUL_HA_STATUS_NULL_ARGUMENT);
    EXPECT(consul_ha_kv_put(c, "k", NULL, 5, 0), CONSUL_HA_STATUS_NULL_ARGUMENT);
    EXPECT(consul_ha_kv_get(NULL, "k", 0, &value, &len), CONSUL_HA_STATUS_NULL_ARGUMENT);
    CHECK(consul_ha_client_error(NULL) == NULL);
    /* A value over Consul's 512 KiB limit: Consul's own 413 answer. */
    size_t big_len = 600 * 1024;
    uint8_t *big = calloc(big_len, 1);
    CHECK(big != NULL);
    EXPECT(consul_ha_kv_put(c, "c-test/big", big, big_len, 0), CONSUL_HA_STATUS_CONSUL);
    CHECK(strlen(consul_ha_client_error(c)) > 0);
    free(big);

    /* Services. */
    const char *tags[] = {"primary", "v1"};
    char *id = NULL;
    EXPECT(consul_ha_register_service(c, "web", "10.0.0.5", 8080, tags, 2, 0, &id),
           CONSUL_HA_STATUS_OK);
    CHECK(strcmp(id, "web-10.0.0.5-8080") == 0);
    char *json = NULL;
    EXPECT(consul_ha_discover_service(c, "web", 0, &json), CONSUL_HA_STATUS_OK);
    CHECK(strstr(json, "\"port\":8080") != NULL && strstr(json, "\"primary\"") != NULL);
    consul_ha_free(json);
    EXPECT(consul_ha_deregister_service(c, id, 0), CONSUL_HA_STATUS_OK);
    EXPECT(consul_ha_discover_service(c, "web", 0, &json), CONSUL_HA_STATUS_OK);
    CHECK(strcmp(json, "[]") == 0);
    consul_ha_free(json);
    consul_ha_free(id);
    EXPECT(consul_ha_register_service(c, "web", "h", 1, NULL, 1, 0, NULL),
           CONSUL_HA_STATUS_NULL_ARGUMENT);

    /* Sessions and locks. */
    char *session = NULL;
    EXPECT(consul_ha_create_session(c, "c-test", 15.0, 0, &session), CONSUL_HA_STATUS_OK);
    CHECK(strlen(session) == 36);
    bool ok = false;
    EXPECT(consul_ha_acquire_lock(c, "c-test/lock", session, (const uint8_t *)"me", 2, 0, &ok),
           CONSUL_HA_STATUS_OK);
    CHECK(ok);
    EXPECT(consul_ha_release_lock(c, "c-test/lock", session, 0, &ok), CONSUL_HA_STATUS_OK);
    CHECK(ok);
    consul_ha_free(session);
    EXPECT(consul_ha_create_session(c, NULL, -1.0, 0, &session), CONSUL_HA_STATUS_INVALID_ARGUMENT);
    CHECK(session == NULL);
    EXPECT(consul_ha_acquire_lock(c, "c-test/lock", "not-a-session", NULL, 0, 0, &ok),
           CONSUL_HA_STATUS_CONSUL);

    /* Non-blocking: submit, wait on the fd, poll. */
    const uint8_t *args[] = {(const uint8_t *)"c-test/nb", (const uint8_t *)"v"};
    size_t lens[] = {9, 1};
    uint64_t t_put = 0, t_get = 0;
    EXPECT(consul_ha_client_submit(c, "kv_put", args, lens, 2, &t_put), CONSUL_HA_STATUS_OK);
    int fd = consul_ha_client_fd(c);
    CHECK(fd >= 0);
    ConsulHaStatus s;
    char *result = NULL;
    size_t rlen = 0;
    double t0 = now_s();
    while ((s = consul_ha_client_poll(c, t_put, &result, &rlen)) == CONSUL_HA_STATUS_PENDING) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 100);
        CHECK(now_s() - t0 < 5.0);
    }
    CHECK(s == CONSUL_HA_STATUS_OK);
    consul_ha_free(result);
    EXPECT(consul_ha_client_submit(c, "kv_get", args, NULL, 1, &t_get), CONSUL_HA_STATUS_OK);
    while ((s = consul_ha_client_poll(c, t_get, &result, &rlen)) == CONSUL_HA_STATUS_PENDING) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 100);
    }
    CHECK(s == CONSUL_HA_STATUS_OK && rlen == 1 && result[0] == 'v');
    consul_ha_free(result);
    EXPECT(consul_ha_client_poll(c, t_get, &result, &rlen), CONSUL_HA_STATUS_INVALID_ARGUMENT);
    EXPECT(consul_ha_client_submit(c, "no_such_call", NULL, NULL, 0, &t_get),
           CONSUL_HA_STATUS_INVALID_ARGUMENT);
    EXPECT(consul_ha_client_submit(c, "kv_get", NULL, NULL, 1, &t_get),
           CONSUL_HA_STATUS_NULL_ARGUMENT);
    /* Left unpolled on purpose: freeing the handle cancels or drops it. */
    EXPECT(consul_ha_client_submit(c, "kv_get", args, lens, 1, &t_get), CONSUL_HA_STATUS_OK);
    consul_ha_client_free(c);
    consul_ha_client_free(NULL);

    /* A client of nothing: the call fails within its timeout. */
    EXPECT(consul_ha_client_new("http://127.0.0.1:1", 500, false, &c, &err), CONSUL_HA_STATUS_OK);
    t0 = now_s();
    s = consul_ha_kv_get(c, "k", 300, &value, &len);
    CHECK(s == CONSUL_HA_STATUS_CONSUL || s == CONSUL_HA_STATUS_TIMEOUT);
    CHECK(now_s() - t0 < 3.0);
    CHECK(strlen(consul_ha_client_error(c)) > 0);
    consul_ha_client_free(c);
    EXPECT(consul_ha_client_new("not a url", 0, false, &c, &err), CONSUL_HA_STATUS_INVALID_ARGUMENT);
    CHECK(c == NULL && err != NULL && strlen(err) > 0);
    consul_ha_free(err);
    EXPECT(consul_ha_client_new(NULL, 0, true, NULL, NULL), CONSUL_HA_STATUS_NULL_ARGUMENT);
}

static ConsulHaCluster *member(const char *id, const char *address) {
    ConsulHaClusterOptions o = {0};
    o.service = "c-test";
    o.node_id = id;
    o.node_address = address;
    o.heartbeat_interval_ms = 200;
    o.session_ttl_ms = 1000;
    o.lock_delay_ms = 200;
    o.simulate = true;
    ConsulHaCluster *c = NULL;
    EXPECT(consul_ha_cluster_new(&o, &c, NULL), CONSUL_HA_STATUS_OK);
    EXPECT(consul_ha_cluster_start(c, 5000), CONSUL_HA_STATUS_OK);
    return c;
}

static int leader_of(ConsulHaCluster **members, int n) {
    for (int i = 0; i < n; i++) {
        bool leads = false;
        if (members[i] && consul_ha_cluster_is_leader(members[i], &leads) == CONSUL_HA_STATUS_OK &&
            leads)
            return i;
    }
    return -1;
}

static int wait_leader(ConsulHaCluster **members, int n, int not) {
    double t0 = now_s();
    for (;;) {
        int l = leader_of(members, n);
        if (l >= 0 && l != not) return l;
        CHECK(now_s() - t0 < 15.0);
        usleep(50 * 1000);
    }
}

static void test_cluster(void) {
    ConsulHaClusterOptions bad = {0};
    bad.node_id = "a b";
    bad.node_address = "h:1";
    bad.simulate = true;
    ConsulHaCluster *c = NULL;
    char *err = NULL;
    EXPECT(consul_ha_cluster_new(&bad, &c, &err), CONSUL_HA_STATUS_INVALID_ARGUMENT);
    CHECK(c == NULL && strstr(err, "node_id") != NULL);
    consul_ha_free(err);
    EXPECT(consul_ha_cluster_new(NULL, &c, NULL), CONSUL_HA_STATUS_NULL_ARGUMENT);

    ConsulHaCluster *m[3];
    m[0] = member("n1", "10.0.0.1:7000");
    m[1] = member("n2", "10.0.0.2:7000");
    m[2] = member("n3", "10.0.0.3:7000");
    EXPECT(consul_ha_cluster_start(m[0], 0), CONSUL_HA_STATUS_INVALID_ARGUMENT);
    int first = wait_leader(m, 3, -1);
    char *json = NULL;
    double t0 = now_s();
    /* A follower learns the leader from its own watch of the leader key. */
    while (consul_ha_cluster_leader_info(m[(first + 1) % 3], &json) == CONSUL_HA_STATUS_NOT_FOUND) {
        CHECK(now_s() - t0 < 10.0);
        usleep(50 * 1000);
    }
    CHECK(json != NULL && strstr(json, "fencing_token") != NULL);
    consul_ha_free(json);

    /* Every member sees three passing members and places keys the same way. */
    t0 = now_s();
    for (;;) {
        EXPECT(consul_ha_cluster_nodes(m[0], &json), CONSUL_HA_STATUS_OK);
        int passing = 0;
        for (char *p = json; (p = strstr(p, "\"passing\"")) != NULL; p++) passing++;
        consul_ha_free(json);
        if (passing == 3) break;
        CHECK(now_s() - t0 < 10.0);
        usleep(50 * 1000);
    }
    /* Each member's ring follows its own watch: wait until both hold all three. */
    t0 = now_s();
    for (;;) {
        char *a = NULL, *b = NULL;
        ConsulHaStatus sa = consul_ha_cluster_node_for_key(m[0], (const uint8_t *)"order:42", 8, &a);
        ConsulHaStatus sb = consul_ha_cluster_node_for_key(m[2], (const uint8_t *)"order:42", 8, &b);
        CHECK(sa == CONSUL_HA_STATUS_OK || sa == CONSUL_HA_STATUS_NOT_FOUND);
        CHECK(sb == CONSUL_HA_STATUS_OK || sb == CONSUL_HA_STATUS_NOT_FOUND);
        int same = a != NULL && b != NULL && strcmp(a, b) == 0;
        consul_ha_free(a);
        consul_ha_free(b);
        if (same) break;
        CHECK(now_s() - t0 < 10.0);
        usleep(50 * 1000);
    }

    /* The production manager on one member. */
    ConsulHaManagerOptions mo = {0};
    mo.shards = 8;
    mo.replicas = 2;
    mo.copy_time_ms = 100;
    ConsulHaManager *mgr[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        EXPECT(consul_ha_manager_start(m[i], &mo, &mgr[i], NULL), CONSUL_HA_STATUS_OK);
    t0 = now_s();
    while (consul_ha_manager_route(mgr[0], (const uint8_t *)"k", 1, &json) != CONSUL_HA_STATUS_OK) {
        CHECK(now_s() - t0 < 15.0);
        usleep(100 * 1000);
    }
    CHECK(strstr(json, "\"primary\"") != NULL);
    consul_ha_free(json);
    EXPECT(consul_ha_manager_health(mgr[0], &json), CONSUL_HA_STATUS_OK);
    CHECK(strstr(json, "\"table_version\"") != NULL);
    consul_ha_free(json);
    EXPECT(consul_ha_manager_route(mgr[0], NULL, 3, &json), CONSUL_HA_STATUS_NULL_ARGUMENT);
    CHECK(strcmp(consul_ha_manager_error(mgr[0]), "key is NULL") == 0);
    for (int i = 0; i < 3; i++) consul_ha_manager_free(mgr[i]);

    /* Failover: the leader crashes (freed without stop); another takes over. */
    consul_ha_cluster_free(m[first]);
    m[first] = NULL;
    t0 = now_s();
    int next = wait_leader(m, 3, first);
    CHECK(next != first);
    fprintf(stderr, "c test: leader n%d crashed, n%d took over after %.2f s\n", first + 1,
            next + 1, now_s() - t0);

    /* Graceful stop of the new leader: the last one takes over at once. */
    EXPECT(consul_ha_cluster_stop(m[next], 0), CONSUL_HA_STATUS_OK);
    EXPECT(consul_ha_cluster_stop(m[next], 0), CONSUL_HA_STATUS_INVALID_ARGUMENT);
    bool leads = true;
    EXPECT(consul_ha_cluster_is_leader(m[next], &leads), CONSUL_HA_STATUS_INVALID_ARGUMENT);
    int last = 3 - first - next;
    t0 = now_s();
    CHECK(wait_leader(m, 3, next) == last);
    fprintf(stderr, "c test: n%d stopped, n%d took over after %.2f s\n", next + 1, last + 1,
            now_s() - t0);
    EXPECT(consul_ha_cluster_stop(m[last], 0), CONSUL_HA_STATUS_OK);
    for (int i = 0; i < 3; i++) consul_ha_cluster_free(m[i]);
}

int main(void) {
    CHECK(consul_ha_abi_version() == CONSUL_HA_ABI_VERSION);
    CHECK(strcmp(consul_ha_status_name(CONSUL_HA_STATUS_TIMEOUT), "CONSUL_HA_STATUS_TIMEOUT") == 0);
    CHECK(strcmp(consul_ha_status_name(12345), "unknown") == 0);
    consul_ha_free(NULL);
    test_client();
    test_cluster();
    consul_ha_shutdown();
    printf("c test: %d checks passed\n", checks);
    return 0;
}
