"""Where the sim's answers differ from real Consul's, request by request.

After `cargo xtask compat`, each test's HTTP exchanges are in
target/compat/logs/{sim,consul}/<test>.http. This walks both traces of every test side by side
(until the two request sequences part) and prints, once per endpoint and kind of difference:
a different status code, or JSON answers of different shape (keys only on one side, or a value
of another type, e.g. null vs ""). Values that are expected to differ (indexes, ids) are not
compared, only shapes.

    python3 compat/py-consul/tracediff.py [target/compat]
"""

from __future__ import annotations

import json
import os
import re
import sys


def parse(path: str) -> list[dict[str, str]]:
    """The exchanges of one .http trace: request line, request body, status, answer."""
    out, cur = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("> ") and cur is None:
                method, url = line[2:].split(" ", 1)
                cur = {"req": f"{method} {re.sub(r'^http://[^/]+', '', url)}", "body": ""}
            elif line.startswith("> ") and cur is not None:
                cur["body"] = line[2:]
            elif line.startswith("< ") and cur is not None:
                cur["code"], _, cur["resp"] = line[2:].partition(" ")
                out.append(cur)
                cur = None
    return out


def shape(value, path: str = "") -> dict[str, str]:
    """Every key path of a JSON value (first element of lists) and its type."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        out[path or "."] = "object"
        for k, v in value.items():
            out.update(shape(v, f"{path}.{k}"))
    elif isinstance(value, list):
        out[path or "."] = "array"
        for v in value[:1]:
            out.update(shape(v, path + "[]"))
    else:
        out[path or "."] = "null" if value is None else type(value).__name__
    return out


def endpoint(req: str) -> str:
    """The request with ids, numbers and the query left out: one report per endpoint."""
    method, path = req.split(" ", 1)
    path = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", path.split("?")[0])
    return f"{method} {re.sub(r'/v1/kv/.*', '/v1/kv/<key>', path)}"


def main() -> None:
    work = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "compat")
    sim_dir, consul_dir = os.path.join(work, "logs", "sim"), os.path.join(work, "logs", "consul")
    seen: dict[tuple, str] = {}
    for name in sorted(os.listdir(consul_dir)):
        if not name.endswith(".http") or not os.path.exists(os.path.join(sim_dir, name)):
            continue
        test = name[: -len(".http")]
        for c, s in zip(parse(os.path.join(consul_dir, name)), parse(os.path.join(sim_dir, name))):
            if re.sub(r"\d+", "", c["req"]) != re.sub(r"\d+", "", s["req"]):
                break  # the test took another path on one backend
            ep = endpoint(c["req"])
            if c["code"] != s["code"]:
                seen.setdefault(
                    (ep, "status"),
                    f"{ep}  ({test})\n  consul {c['code']} {c['resp'][:150]}\n  sim    {s['code']} {s['resp'][:150]}",
                )
                continue
            try:
                a, b = shape(json.loads(c["resp"] or "null")), shape(json.loads(s["resp"] or "null"))
            except ValueError:
                continue
            only_c = sorted(set(a) - set(b))
            only_s = sorted(set(b) - set(a))
            typed = [f"{k}: consul {a[k]}, sim {b[k]}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
            if only_c or only_s or typed:
                lines = [f"{ep}  ({test})"]
                lines += [f"  only consul: {', '.join(only_c)}"] if only_c else []
                lines += [f"  only sim:    {', '.join(only_s)}"] if only_s else []
                lines += [f"  type:        {t}" for t in typed]
                seen.setdefault((ep, tuple(only_c), tuple(only_s), tuple(typed)), "\n".join(lines))
    for key in sorted(seen):
        print(seen[key])


if __name__ == "__main__":
    main()
