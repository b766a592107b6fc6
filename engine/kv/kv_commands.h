/* kv_commands: the keyspace's command functions, as the command table
 * (kv_cmd.c) lists them. Internal to engine/kv: everyone else runs
 * commands through kv_cmd.h. */
#ifndef STRATA_KV_COMMANDS_H
#define STRATA_KV_COMMANDS_H

#include "keyspace.h"

/* -ERR wrong number of arguments for '<name>' command */
void kv_reply_wrongargs(struct kv_req *r, const char *name);
/* -ERR wrong number of arguments for '<cmd>|<argv[1]>' command */
void kv_reply_subargs(struct kv_req *r, const char *cmd);
/* -ERR unknown subcommand '<argv[1]>'. Try <help> HELP. */
void kv_reply_unknown_sub(struct kv_req *r, const char *help);

/* kv_server.c: connection and server commands */
void kv_do_ping(struct kv_req *r);
void kv_do_echo(struct kv_req *r);
void kv_do_quit(struct kv_req *r);
void kv_do_select(struct kv_req *r);
void kv_do_time(struct kv_req *r);
void kv_do_hello(struct kv_req *r);
void kv_do_command(struct kv_req *r); /* kv_cmd.c */
void kv_do_auth(struct kv_req *r);
void kv_do_client(struct kv_req *r);
void kv_do_config(struct kv_req *r);
void kv_do_info(struct kv_req *r);
void kv_do_debug(struct kv_req *r);

/* kv_strings.c */
void kv_do_get(struct kv_req *r);
void kv_do_set(struct kv_req *r);
void kv_do_setnx(struct kv_req *r);
void kv_do_setex(struct kv_req *r);
void kv_do_psetex(struct kv_req *r);
void kv_do_getset(struct kv_req *r);
void kv_do_getdel(struct kv_req *r);
void kv_do_getex(struct kv_req *r);
void kv_do_mget(struct kv_req *r);
void kv_do_mset(struct kv_req *r);
void kv_do_msetnx(struct kv_req *r);
void kv_do_incr(struct kv_req *r);
void kv_do_decr(struct kv_req *r);
void kv_do_incrby(struct kv_req *r);
void kv_do_decrby(struct kv_req *r);
void kv_do_incrbyfloat(struct kv_req *r);
void kv_do_append(struct kv_req *r);
void kv_do_strlen(struct kv_req *r);
void kv_do_getrange(struct kv_req *r);
void kv_do_setrange(struct kv_req *r);

/* kv_keys.c */
void kv_do_del(struct kv_req *r);
void kv_do_exists(struct kv_req *r);
void kv_do_touch(struct kv_req *r);
void kv_do_expire(struct kv_req *r);
void kv_do_pexpire(struct kv_req *r);
void kv_do_expireat(struct kv_req *r);
void kv_do_pexpireat(struct kv_req *r);
void kv_do_ttl(struct kv_req *r);
void kv_do_pttl(struct kv_req *r);
void kv_do_expiretime(struct kv_req *r);
void kv_do_pexpiretime(struct kv_req *r);
void kv_do_persist(struct kv_req *r);
void kv_do_type(struct kv_req *r);
void kv_do_keys(struct kv_req *r);
void kv_do_scan(struct kv_req *r);
void kv_do_randomkey(struct kv_req *r);
void kv_do_rename(struct kv_req *r);
void kv_do_renamenx(struct kv_req *r);
void kv_do_dbsize(struct kv_req *r);
void kv_do_flushdb(struct kv_req *r);

#endif
