/* proto_value -> json-c (herdctl --json, broker/http*.c). */
#ifndef HERD_BROKER_JSON_VALUE_H
#define HERD_BROKER_JSON_VALUE_H

#include <json-c/json.h>

#include "proto/proto.h"

/* A new json-c tree of v (nil: NULL, JSON null); map keys are cut at
 * JSON_KEY_MAX - 1 bytes. */
json_object *value_to_json(const proto_value *v);

#endif
