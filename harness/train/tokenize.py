"""python -m harness.train.tokenize IN.txt OUT.u16 [uint16|uint32]: a byte-level token file."""

import sys

from harness.train.data import tokenize_bytes

if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m harness.train.tokenize IN.txt OUT.u16 [uint16|uint32]")
    count = tokenize_bytes(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "uint16")
    print(f"{count} tokens (vocabulary 256: use a model with vocab_size >= 256) -> {sys.argv[2]}")
