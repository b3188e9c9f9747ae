"""Sentence vectors of a BERT sentence-transformers model, computed from its
files with numpy alone: its own WordPiece tokenizer (from vocab.txt), the
forward pass in float64 from model.safetensors, the pooling its
1_Pooling/config.json names, and unit length. A reference for the agent's
in-process model that shares no code with it.

Usage: bert_reference.py MODEL_DIR < texts.json > vectors.json
"""

import json
import math
import os
import struct
import sys
import unicodedata

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokens(text, lowercase):
    text = "".join(" " if ch.isspace() else ch for ch in text)
    words = []
    for word in text.split():
        if lowercase:
            word = word.lower()
            word = "".join(
                c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn"
            )
        current = ""
        for ch in word:
            if is_punctuation(ch):
                if current:
                    words.append(current)
                    current = ""
                words.append(ch)
            else:
                current += ch
        if current:
            words.append(current)
    return words


def wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = piece
                break
            end -= 1
        if found is None:
            return ["[UNK]"]
        pieces.append(found)
        start = end
    return pieces


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))


def encode(ids, t, cfg, prefix=""):
    p = lambda name: t[prefix + name]
    n = len(ids)
    x = (
        p("embeddings.word_embeddings.weight")[ids]
        + p("embeddings.position_embeddings.weight")[np.arange(n)]
        + p("embeddings.token_type_embeddings.weight")[np.zeros(n, dtype=int)]
    )
    eps = cfg["layer_norm_eps"]
    x = layer_norm(x, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"), eps)
    heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // heads
    for i in range(cfg["num_hidden_layers"]):
        L = lambda name: p(f"encoder.layer.{i}.{name}")
        lin = lambda x, name: x @ L(name + ".weight").T + L(name + ".bias")
        q = lin(x, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
        attn = lin(ctx, "attention.output.dense")
        x = layer_norm(
            attn + x,
            L("attention.output.LayerNorm.weight"),
            L("attention.output.LayerNorm.bias"),
            eps,
        )
        inter = gelu(lin(x, "intermediate.dense"))
        out = lin(inter, "output.dense")
        x = layer_norm(out + x, L("output.LayerNorm.weight"), L("output.LayerNorm.bias"), eps)
    return x


def main():
    folder = sys.argv[1]
    texts = json.load(sys.stdin)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    vocab = {}
    with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    lowercase = True
    tok_cfg = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(tok_cfg):
        lowercase = json.load(open(tok_cfg)).get("do_lower_case", True)
    max_len = cfg["max_position_embeddings"]
    sbert = os.path.join(folder, "sentence_bert_config.json")
    if os.path.exists(sbert):
        max_len = min(max_len, json.load(open(sbert)).get("max_seq_length", max_len))
    pooling = "mean"
    pool_cfg = os.path.join(folder, "1_Pooling", "config.json")
    if os.path.exists(pool_cfg) and json.load(open(pool_cfg)).get("pooling_mode_cls_token"):
        pooling = "cls"
    t = load_safetensors(os.path.join(folder, "model.safetensors"))
    prefix = "" if "embeddings.word_embeddings.weight" in t else "bert."
    vectors = []
    for text in texts:
        pieces = [p for w in basic_tokens(text, lowercase) for p in wordpiece(w, vocab)]
        pieces = ["[CLS]"] + pieces[: max_len - 2] + ["[SEP]"]
        ids = np.array([vocab[p] for p in pieces])
        hidden = encode(ids, t, cfg, prefix)
        v = hidden[0] if pooling == "cls" else hidden.mean(0)
        vectors.append((v / np.linalg.norm(v)).tolist())
    json.dump(vectors, sys.stdout)


if __name__ == "__main__":
    main()
