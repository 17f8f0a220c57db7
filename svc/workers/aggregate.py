"""One Prometheus page for the whole server: the expositions of the owner and of every frontend worker,
merged by summing samples with the same name and labels (counters, histogram buckets/sums/counts, and gauges
that only one process reports). Families keep the order and the `# HELP`/`# TYPE` lines of their first
appearance; numbers that no other process contributes keep their text unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _family_of(sample_name: str, families: Mapping[str, object]) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in families:
            return sample_name[: -len(suffix)]
    return sample_name


def _format(value: float, texts: Sequence[str]) -> str:
    """The sum, written as the processes wrote their numbers: TF's counters as integers, prometheus-client's
    values as Python floats (`3.0`)."""
    if value.is_integer() and abs(value) < 2**53 and all(t.lstrip("-").isdigit() for t in texts):
        return str(int(value))
    return repr(value)


def merge_expositions(pages: Sequence[bytes]) -> bytes:
    headers: dict[str, list[str]] = {}
    samples: dict[str, dict[str, list[str]]] = {}  # family -> series key -> value texts
    for page in pages:
        current = ""
        for line in page.decode().splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    current = parts[2]
                    family_headers = headers.setdefault(current, [])
                    samples.setdefault(current, {})
                    if not any(h.split(None, 2)[1] == parts[1] for h in family_headers):
                        family_headers.append(line)
                continue
            key, _, value = line.rpartition(" ")
            name = key.split("{", 1)[0]
            family = current if name.startswith(current) and current else _family_of(name, samples)
            samples.setdefault(family, {}).setdefault(key, []).append(value)
            headers.setdefault(family, [])
    out: list[str] = []
    for family, series in samples.items():
        out.extend(headers.get(family, []))
        for key, values in series.items():
            if len(values) == 1:
                text = values[0]
            elif key.split("{", 1)[0].endswith("_created"):  # a creation time: the earliest, not a sum
                text = min(values, key=float)
            else:
                text = _format(sum(float(v) for v in values), values)
            out.append(f"{key} {text}")
    return ("\n".join(out) + "\n").encode()
