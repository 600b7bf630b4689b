"""Count words in batches of documents on the local Flyte engine, with one corrupt document, then sum them.

Run with ``python examples/batching.py``. The worked example in docs/auto-batcher.md walks through this run:
how the batch size was chosen, what the corrupt document did to its batch, and how map_reduce folds the counts.
"""

from __future__ import annotations

import flyte

from flyte_patterns import BatchResult, batch_map, flyte_code, map_reduce

env = flyte.TaskEnvironment(name="flyte_patterns_batching_example")

# 23 documents of 1 to 5 words; document 13 cannot be read.
DOCUMENTS = ["corrupt" if i == 13 else " ".join(["word"] * (i % 5 + 1)) for i in range(23)]


class CorruptDocument(Exception):
    """A document that cannot be parsed."""


@env.task
async def count_words(documents: list[str]) -> list[int]:
    counts = []
    for document in documents:
        if document == "corrupt":
            raise CorruptDocument("cannot parse a document")
        counts.append(len(document.split()))
    return counts


@env.task
async def add(total: int, batch_total: int) -> int:
    return total + batch_total


def describe(result: BatchResult[int]) -> str:
    lines = [f"batch_size={result.batch_size}, {result.batches.total} batches"]
    for span, batch in zip(result.spans, result.batches.outcomes, strict=True):
        if batch.error is not None:
            detail = f"{type(batch.error).__name__}, code {flyte_code(batch.error)}: {batch.error}"
        else:
            detail = str(batch.value)
        lines.append(f"  {span.describe():<26} {batch.status.value:<10} {detail}")
    lines.append(f"values: {result.values()}")
    lines.append(f"succeeded={result.succeeded} failed={result.failed} failed items={sorted(result.errors())}")
    return "\n".join(lines)


@env.task
async def count_all(documents: list[str]) -> str:
    result = await batch_map(count_words, documents, concurrency=2, return_result=True)
    readable = [document for document in documents if document != "corrupt"]
    total = await map_reduce(count_words, readable, combine=sum, reduce=add, initial=0, concurrency=2)
    return f"{describe(result)}\nwords in the {len(readable)} readable documents: {total}"


if __name__ == "__main__":
    flyte.init()
    run = flyte.run(count_all, DOCUMENTS)
    print(run.outputs()[0])
