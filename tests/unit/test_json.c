// test_json.c — the validating JSON parser: good documents, escapes, limits, and errors
// that carry the byte offset.
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json.h"

static char err[256];

static mt_json *parse(const char *s) { return mt_json_parse(s, strlen(s), err, sizeof err); }

// Parsing must fail, and the message must mention want.
static int rejects(const char *s, const char *want) {
    mt_json *j = parse(s);
    if (j) { mt_json_free(j); printf("# accepted: %s\n", s); return 0; }
    if (!strstr(err, want)) { printf("# for %s: message '%s' lacks '%s'\n", s, err, want); return 0; }
    return 1;
}

TEST(parses_nested_document) {
    mt_json *j = parse(" {\"a\": [1, -2.5e1, true, false, null], \"b\": {\"c\": \"d\"}, \"n\": 9007199254740993} ");
    CHECK(j && j->type == MT_JSON_OBJECT && j->len == 3);
    if (!j) return;
    const mt_json *a = mt_json_get(j, "a");
    CHECK(a && a->type == MT_JSON_ARRAY && a->len == 5);
    CHECK(a->items[0].is_integer && a->items[0].integer == 1);
    CHECK(!a->items[1].is_integer && a->items[1].number == -25.0);
    CHECK(a->items[2].type == MT_JSON_BOOL && a->items[2].boolean == 1);
    CHECK(a->items[3].type == MT_JSON_BOOL && a->items[3].boolean == 0);
    CHECK(a->items[4].type == MT_JSON_NULL);
    const mt_json *c = mt_json_get(mt_json_get(j, "b"), "c");
    CHECK(c && c->type == MT_JSON_STRING && strcmp(c->string, "d") == 0);
    const mt_json *n = mt_json_get(j, "n");  // beyond 2^53: kept exact as an integer
    CHECK(n && n->is_integer && n->integer == 9007199254740993LL);
    CHECK(mt_json_get(j, "missing") == NULL);
    mt_json_free(j);
}

TEST(decodes_string_escapes) {
    mt_json *j = parse("\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0041\"");
    CHECK(j && j->type == MT_JSON_STRING);
    if (!j) return;
    CHECK(strcmp(j->string, "q\"b\\s/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80" "A") == 0);
    mt_json_free(j);
    j = parse("\"caf\xc3\xa9\"");  // raw UTF-8 passes through
    CHECK(j && strcmp(j->string, "caf\xc3\xa9") == 0);
    mt_json_free(j);
}

TEST(rejects_malformed_documents) {
    CHECK(rejects("", "end of input"));
    CHECK(rejects("[1, 2,]", "offset 6"));
    CHECK(rejects("{\"a\":1,}", "object key"));
    CHECK(rejects("{\"a\" 1}", "':' expected"));
    CHECK(rejects("[1 2]", "offset 3: ',' or ']' expected"));
    CHECK(rejects("\"abc", "unterminated string"));
    CHECK(rejects("\"a\tb\"", "control character"));
    CHECK(rejects("\"\\x\"", "invalid escape"));
    CHECK(rejects("\"\\u12g4\"", "bad hex digit"));
    CHECK(rejects("\"\\ud800\"", "unpaired high surrogate"));
    CHECK(rejects("\"\\udc00\"", "unpaired low surrogate"));
    CHECK(rejects("\"\xff\"", "invalid UTF-8"));
    CHECK(rejects("\"\xc0\xaf\"", "invalid UTF-8"));  // overlong encoding
    CHECK(rejects("01", "unexpected text"));
    CHECK(rejects("-", "invalid number"));
    CHECK(rejects("1.", "digit expected"));
    CHECK(rejects("1e+", "digit expected"));
    CHECK(rejects("NaN", "invalid number"));
    CHECK(rejects("tru", "invalid literal"));
    CHECK(rejects("{} {}", "unexpected text"));
    CHECK(rejects("{\"a\":1,\"b\":2,\"a\":3}", "duplicate key \"a\""));
    CHECK(rejects("{\"a\\u0000b\":1}", "NUL character in object key"));
}

TEST(limits_nesting_depth) {
    char deep[2 * MT_JSON_MAX_DEPTH + 8], ok[2 * MT_JSON_MAX_DEPTH + 8];
    int n = MT_JSON_MAX_DEPTH + 2;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = 0;
    CHECK(rejects(deep, "nesting deeper than"));
    n = MT_JSON_MAX_DEPTH;
    memset(ok, '[', n);
    memset(ok + n, ']', n);
    ok[2 * n] = 0;
    mt_json *j = parse(ok);
    CHECK(j != NULL);
    mt_json_free(j);
}

TEST(rejects_truncation_of_a_valid_document) {
    const char *doc = "{\"k\": [1, {\"x\": \"y\\n\"}, 3.5], \"z\": false}";
    size_t len = strlen(doc);
    int accepted = 0;
    for (size_t cut = 0; cut < len; cut++) {
        mt_json *j = mt_json_parse(doc, cut, err, sizeof err);
        if (j) { accepted++; mt_json_free(j); }
    }
    CHECK(accepted == 0);
    mt_json *j = mt_json_parse(doc, len, err, sizeof err);
    CHECK(j != NULL);
    mt_json_free(j);
}

int main(void) {
    RUN(parses_nested_document);
    RUN(decodes_string_escapes);
    RUN(rejects_malformed_documents);
    RUN(limits_nesting_depth);
    RUN(rejects_truncation_of_a_valid_document);
    return check_summary();
}
