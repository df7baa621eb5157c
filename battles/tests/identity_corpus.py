"""A labelled corpus for the identity-leak detector, and the rule it replaced.

Each case is (catalog entry, reply text, whether the reply names the model that wrote it). The
catalog entries cover the families and makers the README names, the local models and the test
models of the load test; the ordinary answers mention the same words the way ordinary answers
do (code, maths, history, tooling). `benchmarks/identity.py` prints the figures;
`test_identity.py` holds the detector to them.
"""

import re
from collections.abc import Iterable

MODELS = {
    "gpt": dict(
        name="GPT-4o mini", slug="gpt-4o-mini", upstream="gpt-4o-mini", organization="OpenAI"
    ),
    "claude": dict(
        name="Claude Haiku",
        slug="claude-haiku",
        upstream="claude-3-5-haiku",
        organization="Anthropic",
    ),
    "gemini": dict(
        name="Gemini Flash", slug="gemini-flash", upstream="gemini-2.0-flash", organization="Google"
    ),
    "gemma": dict(
        name="Gemma 3 270M (base)",
        slug="gemma-3-270m",
        upstream="google/gemma-3-270m",
        organization="Google (local)",
    ),
    "llama": dict(
        name="Llama 3.1 8B",
        slug="llama-3-1-8b",
        upstream="meta-llama/llama-3.1-8b",
        organization="Meta",
    ),
    "mistral": dict(
        name="Mistral Small",
        slug="mistral-small",
        upstream="mistral-small-latest",
        organization="Mistral AI",
    ),
    "qwen": dict(
        name="Qwen2.5 7B", slug="qwen2-5-7b", upstream="qwen2.5:7b", organization="Alibaba Cloud"
    ),
    "deepseek": dict(
        name="DeepSeek V3", slug="deepseek-v3", upstream="deepseek-chat", organization="DeepSeek"
    ),
    "phi": dict(name="Phi-4", slug="phi-4", upstream="phi4", organization="Microsoft"),
    "grok": dict(name="Grok 2", slug="grok-2", upstream="grok-2", organization="xAI"),
    "command": dict(
        name="Command R", slug="command-r", upstream="command-r", organization="Cohere"
    ),
    "smollm": dict(
        name="SmolLM2 135M Precise",
        slug="smollm2-135m-precise",
        upstream="smollm2-135m-instruct",
        organization="Hugging Face (local)",
    ),
    "alpha": dict(name="alpha", slug="alpha", upstream="alpha", organization="Example Labs"),
    "test": dict(
        name="test-model", slug="test-model", upstream="test-model", organization="Example Labs"
    ),
}

# The model names itself.
LEAKS = [
    ("gpt", "I am ChatGPT, a large language model trained by OpenAI."),
    ("gpt", "Hi! I'm GPT-4o mini. How can I help you today?"),
    ("gpt", "As an AI developed by OpenAI, I don't have personal opinions."),
    ("gpt", "As ChatGPT, I can't browse the internet in real time."),
    ("gpt", "I'm based on the GPT-4 architecture."),
    ("claude", "I'm Claude, an AI assistant made by Anthropic."),
    ("claude", "My name is Claude and I was created by Anthropic."),
    ("claude", "You're chatting with Claude. What would you like to do?"),
    ("claude", "Anthropic trained me to be helpful, harmless and honest."),
    ("gemini", "I am Gemini, a large language model built by Google."),
    ("gemini", "I'm an AI assistant named Gemini."),
    ("gemini", "I am a large language model, trained by Google."),
    ("gemma", "I'm Gemma, an open-weights AI assistant."),
    ("gemma", "Hello! I'm an AI assistant developed by Google DeepMind."),
    ("gemma", "Gemma 3 270M here: ask me anything."),
    ("llama", "I am Llama, a model developed by Meta AI."),
    ("llama", "I'm the Llama 3 model, released by Meta."),
    ("llama", "I was built by the team at Meta."),
    ("mistral", "I am Mistral, a language model trained by Mistral AI."),
    ("mistral", "I'm an AI model from Mistral AI, based in Paris."),
    ("qwen", "Hello! I'm Qwen, created by Alibaba Cloud. I am a large language model."),
    ("qwen", "I am Qwen2.5, a helpful assistant."),
    ("qwen", "My developers at Alibaba Cloud designed me to answer questions."),
    (
        "deepseek",
        "I'm DeepSeek-V3, an AI assistant created exclusively by the Chinese company DeepSeek.",
    ),
    ("deepseek", "I am DeepSeek Chat, here to help."),
    ("phi", "I am Phi-3, developed by Microsoft."),
    ("phi", "I'm Phi, a small language model from Microsoft."),
    ("grok", "I'm Grok, built by xAI."),
    ("grok", "As Grok, I aim to give maximally helpful answers."),
    ("command", "I am Command R, a large language model built by Cohere."),
    ("command", "Command R here, how can I help?"),
    ("command", "I was trained by Cohere to help with enterprise tasks."),
    ("smollm", "My name is SmolLM, and I was trained by Hugging Face."),
    ("smollm", "I'm SmolLM2, a compact language model."),
    ("smollm", "SmolLM2 135M Precise at your service."),
    ("alpha", "I am alpha, made by Example Labs. The answer is 4."),
    ("test", "I am test-model, made by Example Labs. Here is the answer."),
    ("test", "I'm a test model from Example Labs."),
]

# Ordinary answers: the same words, no self-identification.
HONEST = [
    (
        "test",
        "Let's write a unit test first:\n```python\ndef test_model():\n    assert fit() == 1\n```",
    ),
    ("test", "I'm going to test this approach on a small sample before scaling up."),
    ("test", "Run the test suite with `pytest -q`; a failing test prints its diff."),
    ("test", "Split the data into a training set and a test set, then evaluate the model."),
    ("test", "I am testing two hypotheses here: the test statistic is t = 2.1."),
    ("command", "Run the command `ls -la` to list every file, hidden ones included."),
    ("command", "In bash, `command -v python` tells you whether python is on the PATH."),
    ("command", "I'd use the command pattern: each action is an object with an execute() method."),
    ("command", "The general took command of the army in 1805."),
    ("phi", "The golden ratio phi is about 1.618.\n```python\nphi = (1 + 5 ** 0.5) / 2\n```"),
    ("phi", "In polar coordinates, phi is the azimuth; I use phi for the angle below."),
    ("phi", "Euler's totient phi(n) counts the integers up to n coprime to n."),
    ("phi", "Microsoft Excel can do this with a pivot table."),
    ("gemma", "Google's search engine was first developed by Larry Page and Sergey Brin."),
    ("gemma", "I recommend TensorFlow, which was developed by Google, or PyTorch."),
    ("gemini", "Gemini is a zodiac constellation between Taurus and Cancer."),
    ("gemini", "NASA's Gemini program preceded Apollo; I find its history fascinating."),
    ("gemini", "You can search Google for the exact error message."),
    ("claude", "Claude Monet painted the water lilies in his garden at Giverny."),
    ("claude", "Claude Shannon founded information theory in 1948."),
    ("llama", "A llama is a domesticated South American camelid."),
    ("llama", "Meta-analysis pools the results of several studies."),
    ("llama", "I'm using PyTorch, developed by Meta, for this example."),
    ("llama", "Load the weights with `llama.cpp` and run `./main -m model.gguf`."),
    ("gpt", "GPT stands for generative pre-trained transformer."),
    ("gpt", "OpenAI's API returns JSON; parse it with `json.loads`."),
    ("mistral", "The mistral is a strong, cold wind in southern France."),
    ("qwen", "Alibaba Cloud offers object storage called OSS."),
    ("deepseek", "DeepSeek released a paper on mixture-of-experts routing last year."),
    ("grok", "To grok something is to understand it deeply, a word from Heinlein."),
    ("smollm", "Hugging Face hosts many datasets; I'd start with `datasets.load_dataset`."),
    ("smollm", "Download the model from Hugging Face with `huggingface-cli download`."),
    ("alpha", "Set alpha to 0.05: that is the significance level of the test."),
    ("alpha", "I am an alpha tester of the new build, and I found two bugs."),
    ("alpha", "```python\nalpha = 0.5\nblend = alpha * a + (1 - alpha) * b\n```"),
    ("command", "I am in command of the project, so I set the deadlines."),
]


# The rule this corpus replaced: the leading distinctive word of each identifier, and the common
# names of the model's family, anywhere in the reply.
_OLD_ALIASES = {
    "openai": ("openai", "open ai", "chatgpt", "chat gpt", "gpt"),
    "anthropic": ("anthropic", "claude"),
    "google": ("google", "gemini", "gemma", "bard", "deepmind"),
    "meta": ("meta ai", "llama"),
    "mistral": ("mistral", "mixtral", "codestral"),
    "alibaba": ("alibaba", "qwen", "tongyi"),
    "deepseek": ("deepseek",),
    "microsoft": ("microsoft", "phi-3", "phi-4"),
    "xai": ("grok", "xai"),
    "cohere": ("cohere", "command r"),
}
_OLD_STOP = {"the", "model", "chat", "instruct", "local", "base", "mini", "small", "large", "and"}
_OLD_STOP |= {"ai", "llm", "latest", "preview", "v1", "v2", "v3", "models"}


def old_identity_terms(*, name: str, slug: str, upstream: str, organization: str) -> set[str]:
    terms: set[str] = {name.lower().strip()} if name.strip() else set()
    for source in (name, slug, upstream.split("/")[-1], organization.split("(")[0]):
        for word in [w for w in re.split(r"[^a-z0-9]+", source.lower()) if w]:
            stem = re.sub(r"\d.*$", "", word)
            if len(stem) >= 3 and stem not in _OLD_STOP:
                terms.add(stem)
                break
    for family, aliases in _OLD_ALIASES.items():
        if family in terms or terms.intersection(a for a in aliases if " " not in a):
            terms.update(aliases)
    return terms


def old_leaked_terms(text: str, terms: Iterable[str]) -> list[str]:
    lowered = text.lower()
    return [
        term
        for term in sorted(set(terms))
        if re.search(rf"(?<![a-z]){re.escape(term)}(?![a-z])", lowered)
    ]


def scores(flagged: list[bool], truth: list[bool]) -> tuple[float, float]:
    """Precision and recall of `flagged` against `truth`."""
    true_pos = sum(f and t for f, t in zip(flagged, truth, strict=True))
    precision = true_pos / max(1, sum(flagged))
    recall = true_pos / max(1, sum(truth))
    return precision, recall
