#!/usr/bin/env python3
"""CLIP tokenizer parity fixtures (Tests/Fixtures/tokenizer/), from transformers' CLIPTokenizer.

Needs a venv with `transformers` only (no torch) and open_clip's BPE file, taken from the
open-clip-torch wheel without its dependencies:

    python3 -m venv ~/tokenv && ~/tokenv/bin/pip install transformers
    ~/tokenv/bin/pip download --no-deps open-clip-torch -d /tmp/oc
    ~/tokenv/bin/python scripts/make_tokenizer_fixtures.py /tmp/oc/open_clip_torch-*.whl

Writes bpe_simple_vocab_16e6.txt.gz (copied from the wheel), sd21-tokenizer/ (vocab.json and
merges.txt built from it as open_clip's SimpleTokenizer builds its vocabulary, and SD2.1's
tokenizer_config.json / special_tokens_map.json: pad "!", 77 tokens) and cases.json: seeded strings
with transformers' ids (input_ids padded to 77 with "!", attention_mask length, untruncated ids).
"""
import gzip, json, os, random, sys, zipfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "tokenizer")
SEED = 20261130


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_folder(gz_bytes, folder):
    lines = gzip.decompress(gz_bytes).decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = dict(zip(vocab, range(len(vocab))))
    assert len(encoder) == 49408, len(encoder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    # As stabilityai/stable-diffusion-2-1's tokenizer/ has them.
    at = lambda c: {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    config = {"add_prefix_space": False, "bos_token": at("<|startoftext|>"), "do_lower_case": True, "eos_token": at("<|endoftext|>"),
              "errors": "replace", "model_max_length": 77, "pad_token": "!", "tokenizer_class": "CLIPTokenizer",
              "unk_token": at("<|endoftext|>")}
    special = {"bos_token": at("<|startoftext|>"), "eos_token": at("<|endoftext|>"), "pad_token": "!", "unk_token": at("<|endoftext|>")}
    for name, value in [("tokenizer_config.json", config), ("special_tokens_map.json", special)]:
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")


WORDS = ("a photo of an astronaut riding horse on mars lighthouse at dusk oil painting portrait woman man cat dog "
         "trending artstation highly detailed 4k 8k octane render unreal engine by greg rutkowski cinematic lighting "
         "beautiful landscape mountains river forest city night neon cyberpunk steampunk watercolor sketch").split()
PIECES = ["!", "!!", "?!", ".", ",", ";", ":", "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "\"", "(", ")", "[", "]",
          "{", "}", "<", ">", "/", "\\", "-", "_", "+", "=", "*", "&", "#", "@", "$", "%", "^", "~", "`", "|",
          "é", "ñ", "ü", "ç", "ø", "å", "ß", "ẞ", "É", "Ñ", "Ü", "e\u0301", "n\u0303", "u\u0308", "a\u030a", "\u0301",
          "İ", "ı", "Σ", "ς", "ΣΑΣ", "Ω", "ǅ", "ﬁ", "Ⅻ", "²", "½", "٣", "०", "𝟘", "Å",
          "日本語", "漢字", "中文", "한국어", "ひらがな", "カタカナ", "ｆｕｌｌｗｉｄｔｈ", "ｱ",
          "🙂", "🚀", "👩‍🚀", "👍🏽", "🇫🇷", "❤️", "©", "™", "€", "£", "¥", "°", "—", "–", "…", "«", "»", "“", "”", "‘", "’",
          "<|startoftext|>", "<|endoftext|>", "<|ENDOFTEXT|>", "<|StartOfText|>", "<|endoftext", "endoftext|>", "<|",
          "<b>", "</b>", "<div class=\"x\">", "&amp;", "&lt;", "&#39;", "&nbsp;", "<br/>",
          "\t", "\n", "\r\n", "  ", "\u00a0", "\u3000", "\u2003", "\u200b", "\u0085", "\u001c", "\u00ad", "\ufeff",
          "0", "1", "42", "3.14", "1,000", "2024", "x2", "v1.5",
          "don't", "it's", "we're", "I've", "I'm", "you'll", "he'd", "DON'T", "IT'S", "o'clock", "rock'n'roll"]


def generated(rng):
    kind = rng.randrange(6)
    if kind == 0:  # prompt-like
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))
    if kind == 1:  # words and pieces, random spacing
        out = []
        for _ in range(rng.randint(1, 20)):
            out.append(rng.choice(WORDS + PIECES))
            out.append(rng.choice(["", " ", " ", "  ", "\t", "\n"]))
        return "".join(out)
    if kind == 2:  # mixed case
        return "".join(c.upper() if rng.random() < 0.3 else c for c in " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))))
    if kind == 3:  # random code points from interesting ranges
        ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF), (0x900, 0x97F),
                  (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xACFF), (0x1F300, 0x1F6FF), (0x2000, 0x206F), (0xFF00, 0xFFEF)]
        s = []
        for _ in range(rng.randint(1, 30)):
            lo, hi = rng.choice(ranges)
            s.append(chr(rng.randint(lo, hi)))
        return "".join(s)
    if kind == 4:  # "!" inside prompts, special tokens typed by the user
        return rng.choice(WORDS) + rng.choice(["!", " !", "! ", "!!!", "<|endoftext|>", "<|startoftext|>", " <|ENDOFTEXT|> "]) + rng.choice(WORDS)
    return " ".join(rng.choice(WORDS + PIECES) for _ in range(rng.randint(150, 220)))  # long: truncates


def main():
    wheel = sys.argv[1]
    with zipfile.ZipFile(wheel) as z:
        gz = z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "bpe_simple_vocab_16e6.txt.gz"), "wb") as f:
        f.write(gz)
    folder = os.path.join(OUT, "sd21-tokenizer")
    write_folder(gz, folder)

    import transformers, tokenizers
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(folder)
    assert tok.pad_token == "!" and tok.pad_token_id == 0 and tok.model_max_length == 77

    fixed = ["", " ", "   ", "\t\n", "\n", "a photo of a cat", "A Photo Of A Cat", "hello!! world!", "!", "!!!", "a!b",
             "a<|endoftext|>b", "A<|ENDOFTEXT|>B", "<|startoftext|>x", "<|startoftext|><|endoftext|>",
             "Café e\u0301 İstanbul ΣΑΣ", "don't it's we're", "x'sy !'s", "日本語 🙂🙂", "\tTab\nnew\r\nline",
             "<b>bold</b> &amp; &lt;tag&gt;", "naïve façade coöperate", "ﬁne ligature", "12345 3.14159", "🇫🇷👩‍🚀",
             " ".join(["word"] * 200), " ".join(["word"] * 75), " ".join(["word"] * 76), " ".join(["word"] * 74)]
    fixed += PIECES + WORDS
    rng = random.Random(SEED)
    strings = list(dict.fromkeys(fixed))
    while len(strings) < 2200:
        s = generated(rng)
        if s not in strings:
            strings.append(s)
    cases = []
    for s in strings:
        padded = tok(s, padding="max_length", max_length=77, truncation=True)
        full = tok(s)["input_ids"]
        cases.append({"text": s, "input_ids": padded["input_ids"], "length": sum(padded["attention_mask"]), "ids": full})
    meta = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__, "python": sys.version.split()[0],
            "open_clip_torch_wheel": os.path.basename(wheel), "seed": SEED, "pad_token": "!", "max_length": 77,
            "note": "input_ids: tok(text, padding='max_length', max_length=77, truncation=True); ids: tok(text) (untruncated)"}
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": meta, "cases": cases}, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(len(cases), "cases;", meta)


if __name__ == "__main__":
    main()
