/* herdctl top: a live view of the broker, refreshed every second. */
#ifndef HERD_TOOLS_HERDCTL_TOP_H
#define HERD_TOOLS_HERDCTL_TOP_H

#include <json-c/json.h>

#include "admin_client.h"

/* The broker's admin result as JSON: */
#include "broker/json_value.h" /* value_to_json */

/* Samples agents, models and cache every second and prints per agent
 * requests and tokens/s, per model state, bytes and queues, and the cache
 * counters (json: one JSON object per view). once: two samples one second
 * apart, one view. Returns the exit status. */
int herdctl_top(adm_client *a, int json, int once);

#endif
