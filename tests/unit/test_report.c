// Unit tests of the report's pure parts: ranking errors, the per-task differences, escaping
// for XML/HTML and Markdown, and mean ± sample std over seeds.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "report.h"
#include "seeds.h"

// What f(s) writes, as a string (caller frees).
static char *written(void (*f)(FILE *, const char *), const char *s) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    f(mem, s);
    fclose(mem);
    return buf;
}

TEST(rank_errors_orders_by_magnitude_then_tie_then_index) {
    double diff[] = {0.5, -2.0, 3.0, 0, 3.0, 1.0, -0.1, 3.0};
    double tie[] = {0, 0, 0.2, 0, NAN, 0, 0, 0.9};
    int out[8];
    int n = mt_rank_errors(diff, tie, 8, +1, out, 8);
    CHECK(n == 5);  // 0 is in neither direction
    int want[] = {7, 2, 4, 5, 0};  // 3.0 (tie .9), 3.0 (tie .2), 3.0 (tie NAN: last), 1.0, 0.5
    for (int i = 0; i < 5 && i < n; i++) CHECK(out[i] == want[i]);
    n = mt_rank_errors(diff, tie, 8, -1, out, 8);
    CHECK(n == 2 && out[0] == 1 && out[1] == 6);
    n = mt_rank_errors(diff, NULL, 8, +1, out, 2);  // top 2, no tie-breaker: lower index first
    CHECK(n == 2 && out[0] == 2 && out[1] == 4);
    CHECK(mt_rank_errors(diff, NULL, 0, +1, out, 8) == 0);
}

TEST(error_differences_per_task) {
    char *ids[] = {"a", "b", "c", "d"};
    double gold[] = {0, 1, 1, 0}, pred[] = {1, 0, 1, 0}, conf[] = {0.9, 0.2, 0.8, 0.1};
    mt_task_eval te = {.task = MT_TASK_QQP, .n = 4, .ids = ids, .gold = gold, .pred = pred, .conf = conf};
    double diff[4], tie[4];
    mt_error_differences(&te, diff, tie);
    CHECK_NEAR(diff[0], 0.9, 1e-12);   // false positive: p(duplicate) − 0
    CHECK_NEAR(diff[1], -0.8, 1e-12);  // false negative: p(duplicate) − 1
    CHECK(diff[2] == 0 && diff[3] == 0);  // correct: no error
    CHECK(isnan(tie[0]));
    conf[0] = NAN;  // a stream without probabilities: the class difference
    mt_error_differences(&te, diff, tie);
    CHECK(diff[0] == 1);

    double sg[] = {0, 4, 2}, sp[] = {3, 1, 2}, sc[] = {0.6, 0.4, 0.9};
    mt_task_eval sst = {.task = MT_TASK_SST, .n = 3, .ids = ids, .gold = sg, .pred = sp, .conf = sc};
    mt_error_differences(&sst, diff, tie);
    CHECK(diff[0] == 3 && diff[1] == -3 && diff[2] == 0);
    CHECK(tie[0] == 0.6 && tie[1] == 0.4);  // the probability of the predicted class

    double tg[] = {4.5, 1.0}, tp[] = {2.0, 1.25};
    mt_task_eval sts = {.task = MT_TASK_STS, .n = 2, .ids = ids, .gold = tg, .pred = tp};
    mt_error_differences(&sts, diff, tie);
    CHECK_NEAR(diff[0], -2.5, 1e-12);
    CHECK_NEAR(diff[1], 0.25, 1e-12);
    CHECK(isnan(tie[0]) && isnan(tie[1]));
}

TEST(xml_escaping) {
    char *s = written(mt_write_xml_escaped, "a<b & \"c\" 'd'>\te\nf");
    CHECK(strcmp(s, "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt; e f") == 0);
    free(s);
    s = written(mt_write_xml_escaped, "caf\xc3\xa9");  // UTF-8 passes through
    CHECK(strcmp(s, "caf\xc3\xa9") == 0);
    free(s);
}

TEST(markdown_cell_escaping) {
    char *s = written(mt_write_md_escaped, "a|b <i>x</i> & *y* _z_ [l](u) `c` \\\nnext");
    CHECK(strcmp(s, "a\\|b &lt;i&gt;x&lt;/i&gt; &amp; \\*y\\* \\_z\\_ \\[l\\](u) \\`c\\` \\\\ next") == 0);
    free(s);
    s = written(mt_write_md_escaped, "plain, text. 3 - 2 = 1");
    CHECK(strcmp(s, "plain, text. 3 - 2 = 1") == 0);
    free(s);
}

TEST(mean_and_sample_std) {
    double x[] = {0.5, 0.6, 0.7, 0.9}, m, sd;
    mt_mean_std(x, 4, &m, &sd);
    CHECK_NEAR(m, 0.675, 1e-12);
    CHECK_NEAR(sd, sqrt(0.0875 / 3), 1e-12);  // squared deviations sum to 0.0875; n − 1 = 3
    double same[] = {0.8, 0.8, 0.8};
    mt_mean_std(same, 3, &m, &sd);
    CHECK_NEAR(m, 0.8, 1e-15);
    CHECK_NEAR(sd, 0, 1e-15);
    mt_mean_std(x, 1, &m, &sd);
    CHECK(m == 0.5 && isnan(sd));  // one run has no spread
    mt_mean_std(x, 0, &m, &sd);
    CHECK(isnan(m) && isnan(sd));
}

int main(void) {
    RUN(rank_errors_orders_by_magnitude_then_tie_then_index);
    RUN(error_differences_per_task);
    RUN(xml_escaping);
    RUN(markdown_cell_escaping);
    RUN(mean_and_sample_std);
    return check_summary();
}
