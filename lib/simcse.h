// simcse.h — the supervised SimCSE loss (Gao et al. 2021) with in-batch negatives.
//
// Anchors h[B,D], positives h+[B,D] (row i is anchor i's positive) and optional hard
// negatives h-[B,D] (row i is anchor i's, e.g. the contradiction hypothesis of premise i):
//   u = x / max(|x|, 1e-12)                      (torch.nn.functional.normalize)
//   S[i,j]   = u_i . u+_j / tau,   S[i,B+j] = u_i . u-_j / tau
//   l_i = logsumexp_j S[i,:] - S[i,i]            (= -log softmax(S[i,:])[i])
//   loss = mean_i l_i
// symmetric: loss = (loss + loss') / 2 where loss' takes the positives as anchors against the
// anchors only, l'_i = logsumexp_j S[j,i] - S[i,i] (sentence-transformers'
// MultipleNegativesSymmetricRankingLoss). Similarities and softmaxes are in double, with
// the row maximum subtracted, so tau = 0.05 (logits up to 20) is safe.
#ifndef MT_SIMCSE_H
#define MT_SIMCSE_H

#include <stddef.h>

#define MT_SIMCSE_TAU 0.05

typedef struct {
    int max_B, D;
    double tau;
    int symmetric;
    // ---- saved by the last forward ----
    int B, has_neg;
    double *u, *up, *un;        // [B,D] unit vectors of h, h+, h-
    double *norm;               // [3][B] |h|, |h+|, |h-|
    double *prob;               // [B, 2B] softmax rows of S (columns B.. only with h-)
    double *prob_rev;           // [B, B] softmax rows of the reverse direction (symmetric)
    double *dS;                 // [B, 2B] backward scratch
    double *du;                 // [B, D] backward scratch
    double loss;                // the last forward's loss
    double accuracy;            // fraction of anchors whose own positive scores highest
} mt_simcse;

// Allocates for batches of up to max_B pairs of D-dimensional embeddings; dies if tau <= 0.
void mt_simcse_init(mt_simcse *s, int max_B, int D, double tau, int symmetric);
void mt_simcse_free(mt_simcse *s);

// h[B,D], hp[B,D], hn[B,D] or NULL; returns the loss (also in s->loss). B >= 1.
double mt_simcse_forward(mt_simcse *s, const float *h, const float *hp, const float *hn, int B);
// dh[B,D], dhp[B,D] += dloss * d loss / d(.); dhn[B,D] too when the forward had hn (else
// it may be NULL). Call after the forward with the same batch.
void mt_simcse_backward(mt_simcse *s, float *dh, float *dhp, float *dhn, double dloss);

#endif
