/* The `pressure` admin command and the pressure fields of `status`
 * (admin.c dispatches here): PSI now, the eBPF counters per process, the
 * actions in order and the last events with the values that triggered
 * them. The keys are in docs/protocol.md. */
#include "loop_int.h"

#include <stdlib.h>

#include "common/clock.h"

static void write_psi_line(proto_writer *pk, const char *key, const psi_line *l)
{
	proto_write_cstr(pk, key);
	proto_write_map(pk, 4);
	proto_write_kv_double(pk, "avg10", l->avg10);
	proto_write_kv_double(pk, "avg60", l->avg60);
	proto_write_kv_double(pk, "avg300", l->avg300);
	proto_write_kv_uint(pk, "total_us", l->total);
}

static void write_proc(proto_writer *pk, const pressure_proc *p)
{
	proto_write_map(pk, 7);
	proto_write_kv_int(pk, "pid", p->pid);
	proto_write_kv_uint(pk, "faults", p->faults);
	proto_write_kv_uint(pk, "image_faults", p->image_faults);
	proto_write_kv_double(pk, "reclaim_ms", (double)p->reclaim_ns / 1e6);
	proto_write_kv_uint(pk, "reclaims", p->reclaims);
	proto_write_kv_uint(pk, "oom_kills", p->oom_kills);
	proto_write_kv_int(pk, "image_ranges", p->n_ranges);
}

static const char *result_name(int r)
{
	return r == PRESSURE_UNDO ? "undone" : r > 0 ? "shed" : r == 0 ? "nothing" : "error";
}

static void write_event(proto_writer *pk, const pressure_event *e, double now)
{
	proto_write_map(pk, 16);
	proto_write_kv_str(pk, "action", e->name);
	proto_write_kv_int(pk, "rank", e->rank);
	proto_write_kv_str(pk, "result", result_name(e->result));
	proto_write_kv_int(pk, "code", e->result == PRESSURE_UNDO ? 0 : e->result);
	proto_write_kv_str(pk, "msg", e->msg);
	proto_write_kv_double(pk, "t_unix", e->t_unix);
	proto_write_kv_double(pk, "age_s", (now - e->t_mono_ms) / 1e3);
	proto_write_kv_double(pk, "some_avg10", e->psi.some.avg10);
	proto_write_kv_double(pk, "some_avg60", e->psi.some.avg60);
	proto_write_kv_uint(pk, "some_total_us", e->psi.some.total);
	proto_write_kv_double(pk, "full_avg10", e->psi.full.avg10);
	proto_write_kv_double(pk, "full_avg60", e->psi.full.avg60);
	proto_write_kv_uint(pk, "full_total_us", e->psi.full.total);
	proto_write_kv_double(pk, "some_window_us", e->some_window_us);
	proto_write_kv_double(pk, "stall_ms_per_s", e->stall_ms_per_s);
	proto_write_kv_bool(pk, "trigger", e->trigger);
}

static void write_lists(proto_writer *pk, const pressure_stats *s)
{
	proto_write_cstr(pk, "actions");
	proto_write_array(pk, (uint32_t)s->n_actions);
	for (int i = 0; i < s->n_actions; i++) {
		proto_write_map(pk, 2);
		proto_write_kv_str(pk, "name", s->actions[i]);
		proto_write_kv_int(pk, "rank", s->action_ranks[i]);
	}
	proto_write_cstr(pk, "bpf_global");
	write_proc(pk, &s->global);
	proto_write_cstr(pk, "bpf_procs");
	proto_write_array(pk, (uint32_t)s->n_procs);
	for (int i = 0; i < s->n_procs; i++)
		write_proc(pk, &s->procs[i]);
	const double now = clock_mono_ms();
	proto_write_cstr(pk, "events");
	proto_write_array(pk, (uint32_t)s->n_events);
	for (int i = 0; i < s->n_events; i++)
		write_event(pk, &s->events[i], now);
}

void admin_res_pressure(loop *l, proto_writer *pk)
{
	if (!l->pressure) {
		proto_write_map(pk, 1);
		proto_write_kv_bool(pk, "enabled", 0);
		return;
	}
	pressure_stats *s = malloc(sizeof(*s));
	if (!s) {
		proto_write_map(pk, 1);
		proto_write_kv_bool(pk, "enabled", 0); /* out of memory: say little */
		return;
	}
	pressure_snapshot(l->pressure, s);
	proto_write_map(pk, 23);
	proto_write_kv_bool(pk, "enabled", 1);
	proto_write_kv_str(pk, "source", s->source);
	proto_write_kv_bool(pk, "trigger", s->trigger_ok);
	proto_write_kv_str(pk, "trigger_armed", s->trigger_armed);
	proto_write_kv_uint(pk, "trigger_us", s->trigger_us);
	proto_write_kv_uint(pk, "window_us", s->window_us);
	write_psi_line(pk, "some", &s->psi.some);
	write_psi_line(pk, "full", &s->psi.full);
	proto_write_kv_double(pk, "some_window_us", s->some_window_us);
	proto_write_kv_double(pk, "stall_ms_per_s", s->stall_ms_per_s);
	proto_write_kv_int(pk, "level", s->level);
	proto_write_kv_bool(pk, "refusing", s->refusing);
	proto_write_kv_uint(pk, "triggers", s->triggers);
	proto_write_kv_uint(pk, "episodes", s->episodes);
	proto_write_kv_uint(pk, "actions_run", s->actions_run);
	proto_write_kv_uint(pk, "recoveries", s->recoveries);
	proto_write_kv_uint(pk, "refused", s->refused);
	proto_write_kv_bool(pk, "bpf_on", s->bpf_on);
	proto_write_kv_str(pk, "bpf", s->bpf_status);
	write_lists(pk, s);
	free(s);
}

void admin_status_pressure(loop *l, proto_writer *pk)
{
	pressure_stats *s = l->pressure ? malloc(sizeof(*s)) : NULL;
	if (s)
		pressure_snapshot(l->pressure, s);
	const pressure_event *last = s && s->n_events ? &s->events[s->n_events - 1] : NULL;
	proto_write_kv_bool(pk, "pressure_enabled", s != NULL);
	proto_write_kv_double(pk, "pressure_some_avg10", s ? s->psi.some.avg10 : 0);
	proto_write_kv_double(pk, "pressure_full_avg10", s ? s->psi.full.avg10 : 0);
	proto_write_kv_int(pk, "pressure_level", s ? s->level : 0);
	proto_write_kv_bool(pk, "pressure_refusing", s ? s->refusing : 0);
	proto_write_kv_uint(pk, "pressure_actions_run", s ? s->actions_run : 0);
	proto_write_kv_uint(pk, "pressure_refused", s ? s->refused : 0);
	proto_write_kv_str(pk, "pressure_last_action", last ? last->name : "");
	proto_write_kv_str(pk, "pressure_bpf", s ? s->bpf_status : "off: pressure not watched");
	uint64_t img = 0;
	for (int i = 0; s && i < s->n_procs; i++)
		img += s->procs[i].image_faults;
	proto_write_kv_uint(pk, "pressure_image_faults", img);
	proto_write_kv_uint(pk, "pressure_oom_kills", s ? s->global.oom_kills : 0);
	free(s);
}
