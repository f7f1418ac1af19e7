#!/usr/bin/env python3
"""Rewrites CUDA sources into C++ for the CPU emulation (dev/cuda_emulation/cuda_emulation.h).

    preprocess.py --out build/emulation FILE...

writes each FILE to OUT/FILE (the tree mirrored, so relative includes keep working), with:
  kernel<<<grid, block[, shared[, stream]]>>>(args)
      -> ::cuda_emulation::launch("kernel (file:line)", __PRETTY_FUNCTION__, address,
                                  ::cuda_emulation::config(grid, block, ...), [&](auto... a) { kernel(a...); }, args)
  extern __shared__ [__align__(n)] T name[];   -> T* name = ::cuda_emulation::dynamic_shared<T>();
  __shared__ T name[dims];                     -> auto& name = ::cuda_emulation::shared_variable<T[dims]>([] {});
  __CUDACC__                                   -> CUDA_EMULATION
Comments and string literals are left alone. A rewrite keeps the line count (removed line breaks are added
after it) and each file starts with #line 1 "FILE", so compiler messages and __FILE__ name the real
sources. `address` is the kernel's address when the kernel is a variable (`auto kernel = ...;`) or a
non-template __global__ function of the file, for the check of cudaFuncSetAttribute's shared-memory
limit; nullptr otherwise. A file is rewritten only when its output changes (make sees the real changes).
A `__shared__` the rules above do not cover is an error, not a silent per-thread variable.
"""
import argparse
import os
import re
import sys


def mask_comments_and_strings(text):
    """text with comments and string/char literals replaced by spaces (line breaks kept)."""
    out = list(text)
    i, n = 0, len(text)

    def blank(start, end):
        for k in range(start, end):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            blank(i, end)
            i = end
        elif text[i] == 'R' and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            open_paren = text.find("(", i + 2)
            delimiter = text[i + 2:open_paren]
            end = text.find(")" + delimiter + '"', open_paren)
            end = n if end < 0 else end + len(delimiter) + 2
            blank(i + 1, end)
            i = end
        elif text[i] in "\"'":
            if text[i] == "'" and i > 0 and text[i - 1].isalnum():  # a digit separator (1'000)
                i += 1
                continue
            quote, j = text[i], i + 1
            while j < n and text[j] != quote:
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        else:
            i += 1
    return "".join(out)


def matching(code, start, open_char, close_char):
    """Index just past the bracket that closes the one at start."""
    depth = 0
    for k in range(start, len(code)):
        if code[k] == open_char:
            depth += 1
        elif code[k] == close_char:
            depth -= 1
            if depth == 0:
                return k + 1
    raise ValueError(f"unbalanced {open_char}")


def split_top_level(text):
    """text split at the commas outside any brackets."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def kernel_start(code, end):
    """Start of the kernel expression that ends at end: names, ::, and balanced <...> template arguments."""
    k = end
    while k > 0 and code[k - 1].isspace():
        k -= 1
    while k > 0:
        if code[k - 1] == ">":
            depth = 0
            while k > 0:
                k -= 1
                depth += {">": 1, "<": -1}.get(code[k], 0)
                if depth == 0:
                    break
        elif code[k - 1].isalnum() or code[k - 1] == "_":
            k -= 1
        elif code[k - 2:k] == "::":
            k -= 2
        else:
            break
    return k


def addressable_kernels(code):
    """Names whose address the launch can pass: `auto name =` variables and non-template __global__ functions."""
    names = set(re.findall(r"\bauto\s+(\w+)\s*=", code))
    for match in re.finditer(r"__global__[^;{(]*?\b(\w+)\s*\(", code):
        declaration_start = max(code.rfind(";", 0, match.start()), code.rfind("}", 0, match.start()))
        if "template" not in code[declaration_start:match.start()]:
            names.add(match.group(1))
    return names


def line_of(code, position):
    return code.count("\n", 0, position) + 1


def rewrite(text, path):
    code = mask_comments_and_strings(text)
    addressable = addressable_kernels(code)
    edits = []  # (start, end, replacement)

    for match in re.finditer(r"<<<", code):
        config_end = code.find(">>>", match.end())
        open_paren = config_end + 3
        while code[open_paren].isspace():
            open_paren += 1
        if config_end < 0 or code[open_paren] != "(":
            raise ValueError(f"{path}:{line_of(code, match.start())}: a launch without (arguments)")
        close_paren = matching(code, open_paren, "(", ")")
        start = kernel_start(code, match.start())
        kernel = text[start:match.start()].strip()
        config = text[match.end():config_end].strip()
        arguments = text[open_paren + 1:close_paren - 1].strip()
        if not 2 <= len(split_top_level(config)) <= 4:
            raise ValueError(f"{path}:{line_of(code, match.start())}: launch configuration <<<{config}>>>")
        address = f"reinterpret_cast<const void*>({kernel})" if kernel in addressable else "nullptr"
        name = f'"{kernel} ({path}:{line_of(code, match.start())})"'
        replacement = (f"::cuda_emulation::launch({name}, __PRETTY_FUNCTION__, {address}, "
                       f"::cuda_emulation::config({config}), "
                       f"[&](auto... cuda_emulation_arguments) {{ {kernel}(cuda_emulation_arguments...); }}"
                       + (f", {arguments})" if arguments else ")"))
        edits.append((start, close_paren, replacement))

    align = r"(?:__align__\s*\(\s*\w+\s*\)\s*)?"
    for match in re.finditer(r"\bextern\s+__shared__\s+" + align + r"(?P<type>[\w:]+)\s+" + align +
                             r"(?P<name>\w+)\s*\[\s*\]\s*;", code):
        edits.append((match.start(), match.end(),
                      f"{match['type']}* {match['name']} = ::cuda_emulation::dynamic_shared<{match['type']}>();"))
    for match in re.finditer(r"\b__shared__\s+" + align + r"(?P<type>[\w:<>]+)\s+" + align +
                             r"(?P<name>\w+)\s*(?P<dims>(?:\[[^\]]*\]\s*)*);", code):
        if code[:match.start()].rstrip().endswith("extern"):
            continue  # rewritten above
        dims = re.sub(r"\s+", "", match["dims"])
        edits.append((match.start(), match.end(), f"auto& {match['name']} = "
                      f"::cuda_emulation::shared_variable<{match['type']}{dims}>([] {{}});"))
    for match in re.finditer(r"\b__CUDACC__\b", code):
        edits.append((match.start(), match.end(), "CUDA_EMULATION"))

    edits.sort()
    for (_, end_a, _), (start_b, _, _) in zip(edits, edits[1:]):
        if start_b < end_a:
            raise ValueError(f"{path}:{line_of(code, start_b)}: overlapping rewrites")
    out, position = [], 0
    for start, end, replacement in edits:
        out.append(text[position:start])
        out.append(replacement + "\n" * (text.count("\n", start, end) - replacement.count("\n")))
        position = end
    out.append(text[position:])
    result = "".join(out)

    leftover = re.search(r"\b__shared__\b", mask_comments_and_strings(result))
    if leftover:
        raise ValueError(f"{path}:{line_of(result, leftover.start())}: a __shared__ declaration the emulation "
                         "does not rewrite (one variable per declaration, `__shared__ T name[dims];`)")
    return f'#line 1 "{path}"\n' + result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            result = rewrite(text, path)
        except ValueError as error:
            sys.exit(f"preprocess.py: {error}")
        target = os.path.join(args.out, path)
        if os.path.exists(target):
            with open(target, encoding="utf-8") as f:
                if f.read() == result:
                    continue
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(result)


if __name__ == "__main__":
    main()
