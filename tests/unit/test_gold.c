// test_gold.c — gold labels from a TSV and their join with prediction ids.
#include <unistd.h>

#include "check.h"
#include "gold.h"

static char path[] = "/tmp/test_gold_XXXXXX";

static void write_tsv(const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

TEST(reads_id_and_column) {
    write_tsv("id\tsentence\tlabel\nb7\tHello .\t3\na1\tBye .\t0\n");
    mt_gold g;
    char err[512];
    CHECK(mt_gold_read_tsv(path, "label", &g, err, sizeof err) == 0);
    CHECK(g.n == 2);
    CHECK(mt_gold_find(&g, "a1") == 1 && mt_gold_find(&g, "b7") == 0 && mt_gold_find(&g, "zz") == -1);
    CHECK_NEAR(g.value[0], 3, 0);
    mt_gold_free(&g);
}

TEST(line_numbers_without_id_column) {
    write_tsv("s1\ts2\tsimilarity\nx\ty\t4.5\r\nu\tv\t0.25\n");
    mt_gold g;
    char err[512];
    CHECK(mt_gold_read_tsv(path, "similarity", &g, err, sizeof err) == 0);
    CHECK(g.n == 2 && strcmp(g.ids[0], "1") == 0 && strcmp(g.ids[1], "2") == 0);
    CHECK_NEAR(g.value[1], 0.25, 0);  // CRLF line ends are accepted
    mt_gold_free(&g);
}

TEST(bad_files_are_errors) {
    mt_gold g;
    char err[512];
    write_tsv("id\tlabel\na\t1\na\t2\n");
    CHECK(mt_gold_read_tsv(path, "label", &g, err, sizeof err) == -1 && strstr(err, "'a' occurs more than once"));
    write_tsv("id\tlabel\na\t1\nb\tpositive\n");
    CHECK(mt_gold_read_tsv(path, "label", &g, err, sizeof err) == -1 && strstr(err, ":3: label 'positive'"));
    write_tsv("id\tlabel\na\t1\t9\n");
    CHECK(mt_gold_read_tsv(path, "label", &g, err, sizeof err) == -1 && strstr(err, ":2: expected 2"));
    CHECK(mt_gold_read_tsv(path, "score", &g, err, sizeof err) == -1 && strstr(err, "no column 'score'"));
    CHECK(mt_gold_read_tsv("/nonexistent/x.tsv", "label", &g, err, sizeof err) == -1 && strstr(err, "cannot open"));
}

TEST(join_reports_both_sides) {
    char *gold_ids[4] = {"a", "b", "c", "d"}, *pred_ids[4] = {"d", "x", "a", "y"};
    double v[4] = {0, 1, 2, 3}, out[4];
    mt_gold g;
    CHECK(mt_gold_init(&g, gold_ids, v, 4) == -1);
    char err[512];
    CHECK(mt_gold_join(&g, pred_ids, 4, out, err, sizeof err) == -1);
    CHECK(strstr(err, "2 predicted ids have no gold label (x, y)") != NULL);
    CHECK(strstr(err, "2 gold ids have no prediction (b, c)") != NULL);
    char *same[4] = {"c", "a", "d", "b"};
    CHECK(mt_gold_join(&g, same, 4, out, err, sizeof err) == 0);
    CHECK(out[0] == 2 && out[1] == 0 && out[2] == 3 && out[3] == 1);
    mt_gold_free(&g);
    char *dup[3] = {"p", "q", "p"};
    CHECK(mt_gold_init(&g, dup, NULL, 3) == 2);
    mt_gold_free(&g);
}

int main(void) {
    int fd = mkstemp(path);
    close(fd);
    RUN(reads_id_and_column);
    RUN(line_numbers_without_id_column);
    RUN(bad_files_are_errors);
    RUN(join_reports_both_sides);
    unlink(path);
    return check_summary();
}
