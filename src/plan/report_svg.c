/* The report as a picture: a self-contained SVG with the length
 * histogram (L marked), row fill for packed rows against naive padded
 * batches, and real against padding tokens for the three layouts. Plain
 * SVG 1.1, no scripts or external fonts, so any browser shows it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan/naive.h"
#include "plan/plan.h"

enum { WIDTH = 960, PANEL_H = 300, LEFT = 90, RIGHT = 40, TOP = 50 };
enum { LEN_BINS = 48, FILL_BINS = 20 };

#define BLUE "#3b6ea8"
#define ORANGE "#e08a2c"
#define GREY "#c8ccd2"

static const double plot_w = WIDTH - LEFT - RIGHT;
static const double plot_h = PANEL_H - 110;

/* ---- drawing helpers ------------------------------------------------------ */

static void text(FILE *f, double x, double y, const char *anchor, int size,
                 const char *s)
{
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\">"
            "%s</text>\n",
            x, y, anchor, size, s);
}

static void rect(FILE *f, double x, double y, double w, double h,
                 const char *fill)
{
    if (w <= 0 || h <= 0)
        return;
    fprintf(f,
            "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
            "fill=\"%s\"/>\n",
            x, y, w, h, fill);
}

static void line(FILE *f, double x1, double y1, double x2, double y2,
                 const char *stroke, const char *dash)
{
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke=\"%s\"%s%s%s/>\n",
            x1, y1, x2, y2, stroke, dash ? " stroke-dasharray=\"" : "",
            dash ? dash : "", dash ? "\"" : "");
}

/* A "nice" tick step for a range: 1, 2 or 5 times a power of ten. */
static double nice_step(double range, int ticks)
{
    double raw = range / ticks, p = pow(10, floor(log10(raw)));
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* Height of a count on the length panel's log axis, 0..1 of the plot:
 * log10(count + 1) against log10(ymax + 1), so 0 sits on the axis and a
 * single sequence still draws a bar (the long tail past L stays visible
 * beside bins of thousands). */
static double log_height(double count, double ymax)
{
    return log10(count + 1) / log10(ymax + 1);
}

/* The y axis as log_height draws it: ticks at 0, 1, 10, 100, ... */
static void log_ticks(FILE *f, double bottom, double ymax)
{
    char buf[32];
    for (double v = 0; v <= ymax; v = v ? v * 10 : 1) {
        double y = bottom - log_height(v, ymax) * plot_h;
        line(f, LEFT - 5, y, LEFT, y, "#333", NULL);
        line(f, LEFT, y, LEFT + plot_w, y, "#eee", NULL);
        snprintf(buf, sizeof buf, "%g", v);
        text(f, LEFT - 8, y + 4, "end", 12, buf);
    }
}

/* Axes of a panel whose top is y0: x from 0 to xmax, y from 0 to ymax
 * (on log_height's scale when logy). */
static void axes(FILE *f, double y0, double xmax, double ymax, int logy,
                 const char *xlabel, const char *ylabel, const char *xfmt,
                 double xscale)
{
    double bottom = y0 + TOP + plot_h;
    line(f, LEFT, bottom, LEFT + plot_w, bottom, "#333", NULL);
    line(f, LEFT, y0 + TOP, LEFT, bottom, "#333", NULL);
    char buf[64];
    double xs = nice_step(xmax, 8);
    for (double v = 0; v <= xmax * 1.0001; v += xs) {
        double x = LEFT + v / xmax * plot_w;
        line(f, x, bottom, x, bottom + 5, "#333", NULL);
        snprintf(buf, sizeof buf, xfmt, v * xscale);
        text(f, x, bottom + 20, "middle", 12, buf);
    }
    if (logy)
        log_ticks(f, bottom, ymax);
    double ys = nice_step(ymax, 5);
    for (double v = 0; !logy && v <= ymax * 1.0001; v += ys) {
        double y = bottom - v / ymax * plot_h;
        line(f, LEFT - 5, y, LEFT, y, "#333", NULL);
        line(f, LEFT, y, LEFT + plot_w, y, "#eee", NULL);
        snprintf(buf, sizeof buf, "%g", v);
        text(f, LEFT - 8, y + 4, "end", 12, buf);
    }
    text(f, LEFT + plot_w / 2, bottom + 42, "middle", 13, xlabel);
    fprintf(f,
            "<text x=\"%d\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\""
            " transform=\"rotate(-90 %d %.1f)\">%s</text>\n",
            24, y0 + TOP + plot_h / 2, 24, y0 + TOP + plot_h / 2, ylabel);
}

static void title(FILE *f, double y0, const char *s)
{
    fprintf(f,
            "<text x=\"%d\" y=\"%.1f\" font-size=\"16\" font-weight=\"bold\">"
            "%s</text>\n",
            LEFT, y0 + 28, s);
}

static void legend(FILE *f, double x, double y, const char *color,
                   const char *label)
{
    rect(f, x, y - 10, 12, 12, color);
    text(f, x + 18, y, "start", 12, label);
}

/* ---- panel 1: lengths ------------------------------------------------------- */

static void lengths_panel(FILE *f, double y0, const uint32_t *len, size_t n,
                          uint32_t L, const prepack_length_summary *s)
{
    /* up to a little past L or the 99th percentile, the rest in the last
     * bin, so a long tail does not squeeze the picture */
    double xmax = fmax((double)L * 1.25, (double)s->p99 * 1.05);
    if (xmax > s->max && s->max > L)
        xmax = s->max;
    double bin = xmax / LEN_BINS;
    uint64_t counts[LEN_BINS] = {0}, top = 1;
    for (size_t i = 0; i < n; i++) {
        size_t b = (size_t)(len[i] / bin);
        counts[b < LEN_BINS ? b : LEN_BINS - 1]++;
    }
    for (int b = 0; b < LEN_BINS; b++)
        top = counts[b] > top ? counts[b] : top;
    char t[160];
    snprintf(t, sizeof t,
             "Sequence lengths: %zu sequences, median %u, p99 %u, max %u "
             "(last bar: longer)",
             n, s->median, s->p99, s->max);
    title(f, y0, t);
    double ymax = (double)top * 1.1;
    axes(f, y0, xmax, ymax, 1, "tokens per sequence",
         "sequences (log scale)", "%.0f", 1);
    double bottom = y0 + TOP + plot_h, bw = plot_w / LEN_BINS;
    for (int b = 0; b < LEN_BINS; b++) {
        double h = log_height((double)counts[b], ymax) * plot_h;
        rect(f, LEFT + b * bw + 1, bottom - h, bw - 2, h, BLUE);
    }
    double xl = LEFT + fmin(L / xmax, 1.0) * plot_w;
    line(f, xl, y0 + TOP, xl, bottom, "#c0392b", "6,4");
    snprintf(t, sizeof t, "L = %u (%llu longer)", L,
             (unsigned long long)s->over_max_seq_len);
    text(f, xl + 6, y0 + TOP + 14, "start", 12, t);
}

/* ---- panel 2: row fill -------------------------------------------------------- */

/* Row fill histograms: packed rows (tokens / L) against naive padded
 * rows (tokens / the batch's longest). */
typedef struct fills {
    uint64_t packed[FILL_BINS], naive[FILL_BINS];
    uint64_t prows, nrows;
} fills;

static void count_batch(void *opaque, const uint32_t *lengths, size_t count,
                        uint32_t longest)
{
    fills *fl = opaque;
    for (size_t k = 0; k < count; k++) {
        size_t bin = (size_t)((double)lengths[k] / longest * FILL_BINS);
        fl->naive[bin < FILL_BINS ? bin : FILL_BINS - 1]++;
        fl->nrows++;
    }
}

static int count_fills(fills *fl, const prepack_plan *plan,
                       const prepack_plan_stats *st, const uint32_t *len,
                       size_t n, uint32_t batch)
{
    memset(fl, 0, sizeof *fl);
    fl->prows = prepack_plan_row_count(plan);
    for (size_t r = 0; r < fl->prows; r++) {
        double fill =
            (double)prepack_plan_row_tokens(plan, r) / st->max_seq_len;
        size_t bin = (size_t)(fill * FILL_BINS);
        fl->packed[bin < FILL_BINS ? bin : FILL_BINS - 1]++;
    }
    return pp_naive_batches(len, n, st->max_seq_len, pp_plan_overlong(plan),
                            batch, st->items, pp_plan_skipped(plan),
                            count_batch, fl);
}

static void fill_panel(FILE *f, double y0, const fills *fl, uint32_t batch)
{
    const uint64_t *packed = fl->packed, *naive = fl->naive;
    uint64_t prows = fl->prows, nrows = fl->nrows;
    double top = 1;
    for (int b = 0; b < FILL_BINS; b++) {
        top = fmax(top, prows ? 100.0 * (double)packed[b] / (double)prows : 0);
        top = fmax(top, nrows ? 100.0 * (double)naive[b] / (double)nrows : 0);
    }
    char t[160];
    snprintf(t, sizeof t,
             "Row fill: real tokens / row width (packed: L; naive: the "
             "batch's longest, B = %u)",
             batch);
    title(f, y0, t);
    double ymax = top * 1.15;
    axes(f, y0, 1.0, ymax, 0, "fill", "% of rows", "%.0f%%", 100);
    double bottom = y0 + TOP + plot_h, bw = plot_w / FILL_BINS;
    for (int b = 0; b < FILL_BINS; b++) {
        double hn =
            nrows ? 100.0 * (double)naive[b] / (double)nrows / ymax * plot_h
                  : 0;
        double hp =
            prows ? 100.0 * (double)packed[b] / (double)prows / ymax * plot_h
                  : 0;
        rect(f, LEFT + b * bw + 2, bottom - hn, bw / 2 - 2, hn, ORANGE);
        rect(f, LEFT + b * bw + bw / 2, bottom - hp, bw / 2 - 2, hp, BLUE);
    }
    snprintf(t, sizeof t, "packed rows (%llu)", (unsigned long long)prows);
    legend(f, LEFT + 12, y0 + TOP + 16, BLUE, t);
    snprintf(t, sizeof t, "naive padded rows (%llu)",
             (unsigned long long)nrows);
    legend(f, LEFT + 12, y0 + TOP + 34, ORANGE, t);
}

/* ---- panel 3: real and padding tokens ------------------------------------------ */

static void tokens_panel(FILE *f, double y0, const prepack_report *r)
{
    const prepack_layout *l[3] = {&r->naive_batch, &r->padded_to_max,
                                  &r->packed};
    const char *names[3] = {"naive batches", "padded to L", "packed"};
    double most = 1;
    for (int i = 0; i < 3; i++)
        most = fmax(most, (double)l[i]->slots);
    title(f, y0, "Token slots computed: real tokens and padding");
    double bar_h = 34, gap = 22, x0 = LEFT + 60, w = plot_w - 60 - 150;
    char t[160];
    for (int i = 0; i < 3; i++) {
        double y = y0 + TOP + 10 + i * (bar_h + gap);
        double real = (double)(l[i]->slots - l[i]->pad_tokens) / most * w;
        double pad = (double)l[i]->pad_tokens / most * w;
        text(f, x0 - 8, y + bar_h / 2 + 4, "end", 13, names[i]);
        rect(f, x0, y, real, bar_h, BLUE);
        rect(f, x0 + real, y, pad, bar_h, GREY);
        double pct = 100.0 * l[i]->pad_fraction;
        snprintf(t, sizeof t, pct < 1 ? "%.2f%% padding" : "%.1f%% padding",
                 pct);
        if (!l[i]->slots) /* a share of nothing, as the text report says */
            snprintf(t, sizeof t, "n/a: no token slots");
        text(f, x0 + real + pad + 8, y + bar_h / 2 + 4, "start", 12, t);
    }
    double ly = y0 + TOP + 3 * (bar_h + gap) + 16;
    legend(f, x0, ly, BLUE, "real tokens");
    legend(f, x0 + 130, ly, GREY, "padding");
}

int prepack_report_write_svg(const prepack_report *report,
                             const prepack_plan *plan, const uint32_t *lengths,
                             size_t n, FILE *out)
{
    if (!report || !plan || !out || (n && !lengths))
        return PREPACK_EINVAL;
    prepack_plan_stats st;
    prepack_plan_get_stats(plan, &st);
    if (st.sequences != n)
        return PREPACK_EINVAL;
    fills fl; /* first: nothing is written when it fails */
    if (count_fills(&fl, plan, &st, lengths, n, report->batch_size) !=
        PREPACK_OK)
        return PREPACK_ENOMEM;
    int height = 3 * PANEL_H + 20;
    fprintf(out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            WIDTH, height, WIDTH, height);
    lengths_panel(out, 0, lengths, n, st.max_seq_len, &report->lengths);
    fill_panel(out, PANEL_H, &fl, report->batch_size);
    tokens_panel(out, 2 * PANEL_H, report);
    fputs("</svg>\n", out);
    return ferror(out) ? PREPACK_EIO : PREPACK_OK;
}
