/* broker/pressure.c without a broker: PSI text parsing, clear errors when
 * the source or the trigger cannot be set up, the action order (ranks),
 * escalation pacing, hysteresis on recovery, and the built-in refuse
 * action. The state machine runs on a real PSI source (pressure_create
 * opens and arms it) driven by pressure_step with the observations the
 * test chooses; those tests skip without /proc/pressure/memory. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/config.h"
#include "broker/pressure.h"
#include "herd/error.h"

#define PSI "/proc/pressure/memory"

static void test_psi_parse(void **state)
{
	(void)state;
	psi_sample s;
	char err[256];
	const char *ok = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n"
			 "full avg10=0.75 avg60=0.00 avg300=0.00 total=789\n";
	assert_int_equal(psi_parse(ok, strlen(ok), &s, err, sizeof(err)), 0);
	assert_true(s.some.avg10 == 1.5 && s.some.avg60 == 0.25 && s.some.total == 123456);
	assert_true(s.has_full && s.full.avg10 == 0.75 && s.full.total == 789);
	const char *some_only = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
	assert_int_equal(psi_parse(some_only, strlen(some_only), &s, err, sizeof(err)), 0);
	assert_false(s.has_full);
	/* not NUL-terminated: only len bytes are read */
	assert_int_equal(psi_parse(ok, 51, &s, err, sizeof(err)), 0);
	assert_true(s.some.total == 123456);
	static const char *const bad[] = {
		"",
		"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",     /* no some */
		"some avg10=0.00 avg60=0.00 total=0\n",                 /* avg300 missing */
		"some avg10=x avg60=0.00 avg300=0.00 total=0\n",        /* not a number */
		"some avg10=101.0 avg60=0.00 avg300=0.00 total=0\n",    /* not a percentage */
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=12ab\n",  /* trailing junk */
		"other avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",    /* unknown line */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(psi_parse(bad[i], strlen(bad[i]), &s, err, sizeof(err)), HERD_E_FORMAT);
		assert_true(strstr(err, "PSI") != NULL);
	}
	char big[600];
	memset(big, 's', sizeof(big));
	assert_int_equal(psi_parse(big, sizeof(big), &s, err, sizeof(err)), HERD_E_FORMAT);
}

static blog quiet = {.level = BLOG_ERR}; /* the actions' log lines are not the test's output */

static pressure_opts opts(const char *path)
{
	return (pressure_opts){.psi_path = path, .trigger_us = 100000, .window_us = 1000000,
			       .escalate_ms = 1000, .recover_ms = 2000, .stall_ms_per_s = 100,
			       .log = &quiet};
}

static void test_setup_errors(void **state)
{
	(void)state;
	pressure *p = NULL;
	int degraded;
	char err[512];
	pressure_opts o = opts(PSI);
	o.window_us = 100;
	assert_int_equal(pressure_create(&p, &o, &degraded, err, sizeof(err)), HERD_E_INVAL);
	assert_non_null(strstr(err, "pressure.window_us 100"));
	o = opts(PSI);
	o.trigger_us = 2000000;
	assert_int_equal(pressure_create(&p, &o, &degraded, err, sizeof(err)), HERD_E_INVAL);
	assert_non_null(strstr(err, "pressure.trigger_us 2000000"));
	o = opts("/nonexistent/pressure/memory");
	assert_int_equal(pressure_create(&p, &o, &degraded, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/pressure/memory"));
	assert_non_null(strstr(err, "PSI"));
	o = opts("/proc/self/status"); /* readable, not PSI */
	assert_int_equal(pressure_create(&p, &o, &degraded, err, sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "/proc/self/status does not read as PSI"));
	assert_null(p);
}

/* The "pressure" object of the configuration. */
static void test_config(void **state)
{
	(void)state;
	cfg c;
	char err[512];
	cfg_init(&c);
	assert_int_equal(c.pressure.enable, 1);
	assert_int_equal(c.pressure.trigger_us, 150000);
	assert_int_equal(cfg_parse_json(&c, "{\"pressure\": {\"trigger_us\": 40000, \"window_us\": "
					    "2000000, \"recover_ms\": 500, \"bpf\": false}}",
				    err, sizeof(err)),
			 0);
	assert_int_equal(c.pressure.trigger_us, 40000);
	assert_int_equal(c.pressure.window_us, 2000000);
	assert_int_equal(c.pressure.recover_ms, 500);
	assert_int_equal(c.pressure.bpf, 0);
	assert_int_equal(cfg_parse_json(&c, "{\"pressure\": {\"trigger\": 1}}", err, sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "pressure.trigger"));
	assert_int_equal(cfg_parse_json(&c, "{\"pressure\": {\"window_us\": 100}}", err, sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "pressure.window_us"));
	assert_int_equal(cfg_parse_json(&c, "{\"pressure\": {\"trigger_us\": 3000000}}", err,
					sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "above pressure.window_us"));
	assert_int_equal(cfg_parse_json(&c, "{\"pressure\": {\"enable\": 1}}", err, sizeof(err)),
			 HERD_E_FORMAT);
	cfg_fini(&c);
}

/* ---- the state machine ------------------------------------------------------- */

static char calls[256]; /* "B C A ..." in the order actions ran, "-D" for an undo */

static void note(const char *s)
{
	size_t n = strlen(calls);
	snprintf(calls + n, sizeof(calls) - n, "%s%s", n ? " " : "", s);
}

static int shed_nothing(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	(void)why;
	note(arg);
	snprintf(msg, msglen, "nothing here");
	return 0;
}

static int shed_some(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	assert_true(why->psi.some.total > 0 || why->some_window_us >= 0);
	note(arg);
	snprintf(msg, msglen, "shed %s", (const char *)arg);
	return 1;
}

static void undo_some(void *arg)
{
	char u[16];
	snprintf(u, sizeof(u), "-%s", (const char *)arg);
	note(u);
}

static pressure *make(void)
{
	if (access(PSI, R_OK))
		skip();
	pressure *p = NULL;
	int degraded;
	char err[512];
	pressure_opts o = opts(PSI);
	int rc = pressure_create(&p, &o, &degraded, err, sizeof(err));
	if (rc)
		fail_msg("pressure_create: %s", err);
	return p;
}

static void step(pressure *p, double now, double window_us, double stall)
{
	pressure_obs o = {.some_window_us = window_us, .stall_ms_per_s = stall};
	o.psi.some.total = 1000; /* what the events carry */
	pressure_step(p, &o, now);
}

static void test_order_and_hysteresis(void **state)
{
	(void)state;
	pressure *p = make();
	calls[0] = 0;
	/* registered out of order: they run by rank */
	assert_int_equal(pressure_add_action(p, 300, "A", shed_some, NULL, "A"), 0);
	assert_int_equal(pressure_add_action(p, 100, "B", shed_nothing, NULL, "B"), 0);
	assert_int_equal(pressure_add_action(p, 400, "D", shed_some, undo_some, "D"), 0);
	assert_int_equal(pressure_add_action(p, 200, "C", shed_some, undo_some, "C"), 0);
	assert_int_equal(pressure_add_action(p, 1, "", shed_some, NULL, "x"), HERD_E_INVAL);
	step(p, 0, 150000, 0);      /* B has nothing: C runs in the same step */
	assert_string_equal(calls, "B C");
	step(p, 500, 150000, 0);    /* at most one escalation per escalate_ms */
	assert_string_equal(calls, "B C");
	step(p, 1000, 150000, 0);
	step(p, 2000, 150000, 0);
	step(p, 3000, 150000, 0);   /* every action applied: nothing more */
	assert_string_equal(calls, "B C A D");
	step(p, 3500, 10000, 0);    /* quiet, but not for recover_ms yet */
	step(p, 5100, 60000, 0);    /* below the trigger, above half of it: still no recovery */
	assert_string_equal(calls, "B C A D");
	step(p, 5200, 10000, 0);    /* quiet: undo in reverse order */
	assert_string_equal(calls, "B C A D -D -C");
	pressure_stats *st = malloc(sizeof(*st));
	assert_non_null(st);
	pressure_snapshot(p, st);
	assert_int_equal(st->n_actions, 4);
	assert_string_equal(st->actions[0], "B");
	assert_string_equal(st->actions[3], "D");
	assert_int_equal(st->level, 0);
	assert_int_equal(st->recoveries, 1);
	assert_int_equal(st->episodes, 1);
	assert_int_equal(st->n_events, 6); /* B C A D shed/nothing, D C undone */
	assert_int_equal(st->events[0].result, 0);
	assert_int_equal(st->events[1].result, 1);
	assert_int_equal(st->events[5].result, PRESSURE_UNDO);
	assert_true(st->events[1].some_window_us == 150000 && st->events[1].psi.some.total == 1000);
	/* the eBPF stall rate alone is pressure too: a new episode */
	step(p, 6000, 0, 150);
	assert_string_equal(calls, "B C A D -D -C B C");
	pressure_snapshot(p, st);
	assert_int_equal(st->episodes, 2);
	free(st);
	pressure_destroy(p);
}

static void test_refuse_builtin(void **state)
{
	(void)state;
	pressure *p = make();
	char why[256] = "";
	assert_int_equal(pressure_add_builtin_actions(p), 0);
	assert_false(pressure_refusing(p, why, sizeof(why)));
	double t = 0;
	for (int i = 0; i < 4 && !pressure_refusing(p, why, sizeof(why)); i++, t += 1000)
		step(p, t, 500000, 0);
	assert_true(pressure_refusing(p, why, sizeof(why)));
	assert_non_null(strstr(why, "memory pressure"));
	assert_non_null(strstr(why, "avg10="));
	step(p, t + 2500, 0, 0);
	assert_false(pressure_refusing(p, why, sizeof(why)));
	assert_false(pressure_refusing(NULL, why, sizeof(why)));
	pressure_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_psi_parse),
		cmocka_unit_test(test_setup_errors),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_order_and_hysteresis),
		cmocka_unit_test(test_refuse_builtin),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
