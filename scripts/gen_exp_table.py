"""Generate the table of poswise's vectorised exp (``src/poswise/_kernels/_vexp.h``).

exp(x) = 2^(k/N) * exp(r) with k = round(x N / ln 2) and |r| <= ln 2 / (2N), N = 128.
For each j = k mod N the header keeps two 64-bit words:

- ``pw_exp_bits[j]`` = bits of H_j - (j << 45), where H_j is 2^(j/N) rounded to double
  (adding k << 45 then gives the bits of 2^(k/N) rounded: the exponent field takes k / N);
- ``pw_exp_tail[j]`` = bits of T_j = 2^(j/N) / H_j - 1 rounded to double, the relative
  rounding error of H_j, added to the polynomial so that 2^(k/N) is carried to ~106 bits.

The values are computed here with Python's ``decimal`` at 60 digits (exact enough: both
words need 2^(j/N) to ~32 digits). ``python scripts/gen_exp_table.py`` prints the C arrays;
``tests/test_vexp.py`` checks that the header holds exactly what this prints.
"""
import decimal
import struct

BITS = 7
N = 1 << BITS


def _bits(v):
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def table():
    """The two arrays as lists of 64-bit unsigned integers: (bits, tail)."""
    ctx = decimal.Context(prec=60)
    two = decimal.Decimal(2)
    bits, tail = [], []
    for j in range(N):
        exact = ctx.power(two, ctx.divide(decimal.Decimal(j), decimal.Decimal(N)))
        h = float(exact)                      # correctly rounded to double
        t = float(ctx.subtract(ctx.divide(exact, decimal.Decimal(h)), 1))
        bits.append((_bits(h) - (j << (52 - BITS))) % (1 << 64))
        tail.append(_bits(t))
    return bits, tail


def c_source():
    """The C text of both arrays, as it appears in ``_vexp.h``."""
    bits, tail = table()
    out = []
    for name, vals in (("pw_exp_bits", bits), ("pw_exp_tail", tail)):
        out.append(f"static const uint64_t {name}[PW_EXP_N] = {{")
        for i in range(0, N, 4):
            out.append("    " + " ".join(f"0x{v:016x}ULL," for v in vals[i:i + 4]))
        out.append("};")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(c_source(), end="")
