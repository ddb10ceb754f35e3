// lossscale.c — see lossscale.h.
#include "lossscale.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char *MODE_NAMES[] = {"none", "fixed", "dynamic"};

const char *mt_loss_scale_mode_name(mt_loss_scale_mode m) { return MODE_NAMES[m]; }

static int finite_float(double x) { return isfinite(x) && x > 0 && isfinite((float)x) && (float)x > 0; }

double mt_loss_scale_init_parse(const char *arg) {
    double v = mt_parse_double("--loss-scale-init", arg);
    if (v != 0 && !finite_float(v)) mt_die("--loss-scale-init %s: must be 0 (the default) or a positive finite float", arg);
    return v;
}

int mt_loss_scaler_init(mt_loss_scaler *s, const char *spec, double init, const char *precision, char *err,
                        size_t errlen) {
    *s = (mt_loss_scaler){MT_LOSS_SCALE_NONE, 1.0f, 0, 0};
    if (!spec) spec = precision && !strcmp(precision, "fp16") ? "dynamic" : "none";
    if (init <= 0) init = MT_LOSS_SCALE_INIT;
    if (!finite_float(init)) return mt_fail(err, errlen, "--loss-scale-init %g: must be a positive finite float", init);
    if (!strcmp(spec, "none")) return 0;
    if (!strcmp(spec, "dynamic")) {
        s->mode = MT_LOSS_SCALE_DYNAMIC, s->scale = (float)init;
        return 0;
    }
    char *end;
    double v = strtod(spec, &end);
    if (end == spec || *end || !finite_float(v))
        return mt_fail(err, errlen, "--loss-scale %s: expected dynamic, none or a positive number", spec);
    s->mode = MT_LOSS_SCALE_FIXED, s->scale = (float)v;
    return 0;
}

double mt_loss_scaler_unscale_clip(const mt_loss_scaler *s, const mt_grad_segment *seg, int n_seg, double max_norm) {
    if (s->scale != 1.0f) {
        float inv = (float)(1.0 / (double)s->scale);  // as GradScaler: the reciprocal in double, then float
        for (int i = 0; i < n_seg; i++)
            if (seg[i].n) seg[i].be->scale(seg[i].g, inv, seg[i].n);
    }
    return mt_clip_grad_segments(seg, n_seg, max_norm);
}

// A skipped step (fixed or dynamic): counted, the scale halved (dynamic), logged.
static void skip_step(mt_loss_scaler *s, const char *what, double v, long step) {
    float old = s->scale;
    s->skipped++, s->good = 0;
    if (s->mode == MT_LOSS_SCALE_DYNAMIC && s->scale * 0.5f >= FLT_MIN) s->scale *= 0.5f;  // 0 would stick
    mt_log("step %ld: %s %s: optimizer step skipped; loss scale %g -> %g", step, what, isnan(v) ? "NaN" : "inf",
           (double)old, (double)s->scale);
}

int mt_loss_scaler_update(mt_loss_scaler *s, double norm, long step) {
    int finite = isfinite(norm);
    if (s->mode == MT_LOSS_SCALE_NONE) return finite;
    if (!finite) {
        skip_step(s, "gradient norm", norm, step);
        return 0;
    }
    if (s->mode == MT_LOSS_SCALE_DYNAMIC && ++s->good >= MT_LOSS_SCALE_GROWTH_INTERVAL) {
        s->good = 0;
        if (isfinite(s->scale * 2.0f)) s->scale *= 2.0f;
    }
    return 1;
}

int mt_loss_scaler_skip_loss(mt_loss_scaler *s, const char *what, double loss, long step) {
    if (s->mode == MT_LOSS_SCALE_NONE) return -1;
    skip_step(s, what, loss, step);
    return 0;
}

void mt_loss_scaler_format(const mt_loss_scaler *s, char *buf, size_t n) {
    snprintf(buf, n, "%s %.9g %ld %ld", MODE_NAMES[s->mode], (double)s->scale, s->good, s->skipped);
}

int mt_loss_scaler_parse(mt_loss_scaler *s, const char *text) {
    char mode[16];
    double scale;
    long good, skipped;
    if (sscanf(text, "%15s %lf %ld %ld", mode, &scale, &good, &skipped) != 4 || !finite_float(scale) || good < 0 ||
        skipped < 0)
        return -1;
    for (int m = 0; m < 3; m++)
        if (!strcmp(mode, MODE_NAMES[m])) {
            *s = (mt_loss_scaler){(mt_loss_scale_mode)m, (float)scale, good, skipped};
            return 0;
        }
    return -1;
}
