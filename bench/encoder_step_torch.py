"""encoder_step_torch.py — PyTorch's side of bench/encoder_step.sh: one training step
(forward + backward, dropout 0.1, fp32) of BertModel on B sequences of L tokens, best and mean
process CPU time per step.   python3 encoder_step_torch.py MODEL_DIR B L THREADS REPS"""
import sys, time, torch
from transformers import BertModel
torch.set_num_threads(int(sys.argv[4]))
B, L, reps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
m = BertModel.from_pretrained(sys.argv[1], hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train()
ids = torch.tensor([[1000 + ((b * L + t) * 7919) % 20000 for t in range(L)] for b in range(B)])
ts = []
for r in range(reps + 1):
    m.zero_grad(set_to_none=False)
    t0 = time.process_time()
    h = m(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    (h * h).sum().mul(1e-3).backward()
    ts.append(time.process_time() - t0)
ts = ts[1:]
print(f"torch {torch.__version__} threads {torch.get_num_threads()}: B={B} L={L} CPU time per step best {min(ts)*1e3:.1f} ms, mean {sum(ts)/len(ts)*1e3:.1f} ms")
