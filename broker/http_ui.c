/* The dashboard's files, compiled into herdd (no CDN, nothing read at run
 * time): broker/ui/dashboard.html and Debian's Chart.js (libjs-chart.js),
 * embedded by CMake (cmake/embed.cmake) into herd_ui_assets.c. */
#include "http_int.h"

#include <stddef.h>

extern const unsigned char herd_ui_dashboard[];
extern const size_t herd_ui_dashboard_len;
extern const unsigned char herd_ui_chartjs[];
extern const size_t herd_ui_chartjs_len;

int ui_page(http_req *r)
{
	if (!r->h->l->cfg->http.ui)
		return http_reply_error(r, 404, NULL, "the dashboard is off (http.ui false)");
	return http_reply(r, 200, "text/html; charset=utf-8", (const char *)herd_ui_dashboard,
			  herd_ui_dashboard_len);
}

int ui_chartjs(http_req *r)
{
	if (!r->h->l->cfg->http.ui)
		return http_reply_error(r, 404, NULL, "the dashboard is off (http.ui false)");
	return http_reply(r, 200, "application/javascript; charset=utf-8", (const char *)herd_ui_chartjs,
			  herd_ui_chartjs_len);
}
