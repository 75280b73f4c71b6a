"""Reference ids and assistant masks of real Hugging Face chat templates, from transformers' own apply_chat_template,
written to data-pipeline/src/test/resources/golden/hf-templates/ for the Java tests of `data.template: hf`.

Templates: configs/chat-templates/*.jinja (Mistral-7B-Instruct v0.1, v0.2 and v0.3, Mixtral-8x7B-Instruct-v0.1,
zephyr-7b-beta, OpenHermes-2.5's ChatML, Llama 3 and 3.1 Instruct, Gemma 2, Phi-3-mini, Qwen2.5;
configs/chat-templates/README.md names where each was taken from).
Conversations: make_template_goldens.CONVERSATIONS less the three that type special-token texts ("</s>", "<s>") in a
message: transformers matches those as special tokens in the rendered text, mixtune keeps them text (ControlTokens-
FromTemplateTest covers them on the Java side).

Tokenizer: configs/tokenizer/mistral-v1's tokenizer.json with <unk>, <s>, </s> declared special added tokens at ids
0-2, as Mistral-7B's Hub tokenizer.json declares them, so that the bos_token and eos_token a template writes are the
ids 1 and 2 (the bundled file declares none, so transformers would read "<s>" there as the characters < s >). The
other families' templates (OTHER_FAMILIES) run on the same file with their markers (<|eot_id|>, <start_of_turn>...)
also declared special at ids 32000+ (HUB_MARKERS), as a Mistral fine-tune in their format adds them.

Per template, <name>.jsonl holds one line per conversation: {"input_ids", "labels"} (labels -100 off the assistant
mask) and "prompt_ids" (the conversation without its last answer, add_generation_prompt=True), or {"error"} with the
template's raise_exception message. The ids come from apply_chat_template on the template as published; the mask from
return_assistant_tokens_mask=True on <name>.generation.jinja, the same template with {% generation %} around each
assistant's content and closing EOS/end marker (checked to render the very same text), also written out for the Java
test of that path.

A model whose tokenizer has no BOS (config.json's bos_token_id null, tokenizer_config.json's bos_token null; transformers
loads it, and its chat template sees no bos_token): no-bos/<name>.jsonl, the same rows for NO_BOS_TEMPLATES (and
mixtune's built-in mistral template as the Jinja it writes, MistralTemplate.JINJA) on the hub tokenizer with bos_token
null, and no-bos/texts.jsonl, plain text as transformers' tokenizer(text) encodes it there (what TRL's standard-format
DPO and a text prompt use): with tokenizer.json's post-processor, which still writes <s>, and with none.

Run: interop/.venv/bin/python interop/make_hf_template_goldens.py [out_dir]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer

import make_template_goldens as tg

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO / "configs" / "chat-templates"
OUT_DIR = REPO / "data-pipeline" / "src" / "test" / "resources" / "golden" / "hf-templates"
IGNORE = -100

# name -> (the assistant's output in the published template, the same with {% generation %} around what trains)
GENERATION_EDITS = {
    "mistral-7b-instruct-v0.1": (
        "{{ message['content'] + eos_token + ' ' }}",
        "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ ' ' }}",
    ),
    "mixtral-8x7b-instruct-v0.1": (
        "{{ message['content'] + eos_token}}",
        "{% generation %}{{ message['content'] + eos_token}}{% endgeneration %}",
    ),
    "mistral-7b-instruct-v0.3": (
        '{{- " " + message["content"]|trim + eos_token}}',
        '{{- " " }}{% generation %}{{- message["content"]|trim + eos_token}}{% endgeneration %}',
    ),
    # and an assistant's tool calls, from [TOOL_CALLS] to the EOS after them
    "mistral-7b-instruct-v0.3 tool calls": (
        '{{- "[TOOL_CALLS] [" }}',
        '{% generation %}{{- "[TOOL_CALLS] [" }}',
    ),
    "mistral-7b-instruct-v0.3 tool calls end": (
        '            {%- endif %}\n        {%- endfor %}\n    {%- elif message["role"] == "assistant" %}',
        '            {%- endif %}\n        {%- endfor %}{% endgeneration %}\n    {%- elif message["role"] == "assistant" %}',
    ),
    "zephyr-7b-beta": (
        "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n",
        "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}",
    ),
    "openhermes-2.5-chatml": (
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}",
        "{{'<|im_start|>' + message['role'] + '\\n'}}{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}"
        "{% endif %}{{ '\\n' }}",
    ),
    "mistral-7b-instruct-v0.2": (
        "{{- ' ' + message['content'] + eos_token}}",
        "{{- ' ' }}{% generation %}{{- message['content'] + eos_token}}{% endgeneration %}",
    ),
    "llama-3-8b-instruct": (
        "{{ content }}",
        "{% if message['role'] == 'assistant' %}{{ (bos_token if loop.index0 == 0 else '') + '<|start_header_id|>"
        "assistant<|end_header_id|>\n\n' }}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
        "{% endgeneration %}{% else %}{{ content }}{% endif %}",
    ),
    "llama-3.1-8b-instruct": (
        "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
        "'<|eot_id|>' }}",
        "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
        "        {%- if message['role'] == 'assistant' %}{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}"
        "{% endgeneration %}{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}",
    ),
    # and its tool call, from {"name" to the <|eot_id|> (builtin_tools, never given here, keeps its own branch)
    "llama-3.1-8b-instruct tool call": (
        "        {%- else  %}\n"
        "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
        "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
        "            {{- '\"parameters\": ' }}\n"
        "            {{- tool_call.arguments | tojson }}\n"
        "            {{- \"}\" }}\n"
        "        {%- endif %}\n"
        "        {%- if builtin_tools is defined %}\n"
        "            {#- This means we're in ipython mode #}\n"
        "            {{- \"<|eom_id|>\" }}\n"
        "        {%- else %}\n"
        "            {{- \"<|eot_id|>\" }}\n"
        "        {%- endif %}",
        "        {%- if builtin_tools is defined %}{{- \"<|eom_id|>\" }}{%- endif %}\n"
        "        {%- else  %}\n"
        "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
        "            {% generation %}{{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
        "            {{- '\"parameters\": ' }}\n"
        "            {{- tool_call.arguments | tojson }}\n"
        "            {{- \"}\" }}\n"
        "            {%- if builtin_tools is defined %}{{- \"<|eom_id|>\" }}{%- else %}{{- \"<|eot_id|>\" }}{%- endif %}"
        "{% endgeneration %}\n"
        "        {%- endif %}",
    ),
    "gemma-2-9b-it": (
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}",
        "{{ '<start_of_turn>' + role + '\\n' }}{% if role == 'model' %}{% generation %}{{ message['content'] | trim "
        "+ '<end_of_turn>' }}{% endgeneration %}{% else %}{{ message['content'] | trim + '<end_of_turn>' }}{% endif %}"
        "{{ '\\n' }}",
    ),
    "phi-3-mini-4k-instruct": (
        "{{message['content'] + '<|end|>' + '\n'}}",
        "{% generation %}{{message['content'] + '<|end|>'}}{% endgeneration %}{{ '\\n' }}",
    ),
    "qwen2.5-7b-instruct": (
        "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}",
        "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
        "        {%- if message.role == 'assistant' %}{% generation %}{{- message.content + '<|im_end|>' }}"
        "{% endgeneration %}{%- else %}{{- message.content + '<|im_end|>' }}{%- endif %}{{- '\\n' }}",
    ),
    # and an assistant's tool calls: what follows the generation prompt "<|im_start|>assistant\n", to <|im_end|>
    "qwen2.5-7b-instruct tool calls": (
        "        {{- '<|im_start|>' + message.role }}\n"
        "        {%- if message.content %}\n"
        "            {{- '\\n' + message.content }}\n"
        "        {%- endif %}\n"
        "        {%- for tool_call in message.tool_calls %}\n"
        "            {%- if tool_call.function is defined %}\n"
        "                {%- set tool_call = tool_call.function %}\n"
        "            {%- endif %}\n"
        "            {{- '\\n<tool_call>\\n{\"name\": \"' }}",
        "        {{- '<|im_start|>' + message.role + '\\n' }}{% generation %}\n"
        "        {%- if message.content %}\n"
        "            {{- message.content }}\n"
        "        {%- endif %}\n"
        "        {%- for tool_call in message.tool_calls %}\n"
        "            {%- if tool_call.function is defined %}\n"
        "                {%- set tool_call = tool_call.function %}\n"
        "            {%- endif %}\n"
        "            {%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}\n"
        "            {{- '<tool_call>\\n{\"name\": \"' }}",
    ),
    "qwen2.5-7b-instruct tool calls end": (
        "        {%- endfor %}\n        {{- '<|im_end|>\\n' }}",
        "        {%- endfor %}\n        {{- '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}",
    ),
}
# Templates of other model families, rendered on the Mistral tokenizer with their markers as special added tokens (as a
# fine-tune of Mistral that adopts the family's format adds them); written with HUB_MARKERS below.
OTHER_FAMILIES = ("mistral-7b-instruct-v0.2", "llama-3-8b-instruct", "llama-3.1-8b-instruct", "gemma-2-9b-it",
                  "phi-3-mini-4k-instruct", "qwen2.5-7b-instruct")
# the special added tokens of the hub tokenizer for OTHER_FAMILIES (HubTokenizers.IDS in the Java tests)
HUB_MARKERS = {"<|im_start|>": 32000, "<|im_end|>": 32001, "<|start_header_id|>": 32004, "<|end_header_id|>": 32005,
               "<|eot_id|>": 32006, "<start_of_turn>": 32007, "<end_of_turn>": 32008, "<|user|>": 32009,
               "<|assistant|>": 32010, "<|end|>": 32011}
# templates that raise on a system message
RAISES_ON_SYSTEM = ("mistral-7b-instruct-v0.1", "mixtral-8x7b-instruct-v0.1", "gemma-2-9b-it")
NAMES = tuple(name for name in GENERATION_EDITS if " " not in name)
TYPED_SPECIALS = ("special-tokens-as-text", "injected-template", "eos-literal")
# Shapes that mistral-common refuses and other templates may take (mixtune leaves them to the template but for the
# built-in mistral one): two turns of one role in a row, an empty answer. Appended, so the lines above keep their place.
_U, _A = "user", "assistant"
SHAPES = [
    ("consecutive-users", [{"role": _U, "content": "Hi."}, {"role": _U, "content": "Are you there?"},
                           {"role": _A, "content": "Yes, here."}]),
    ("consecutive-answers", [{"role": _U, "content": "Name two colours."}, {"role": _A, "content": "Red."},
                             {"role": _A, "content": "And blue."}]),
    ("empty-answer", [{"role": _U, "content": "Say nothing."}, {"role": _A, "content": ""},
                      {"role": _U, "content": "Now say hi."}, {"role": _A, "content": "Hi."}]),
    ("empty-last-answer", [{"role": _U, "content": "Say nothing."}, {"role": _A, "content": ""}]),
    # OpenAI's tool calling: tool definitions, an assistant's tool_calls (Mistral v0.3 wants 9-character ids), the
    # tool's result; transformers passes the messages' keys and tools= to the template as they are.
    ("tool-call", [{"role": _U, "content": "What is the weather in Paris?"},
                   {"role": _A, "content": "", "tool_calls": [{"id": "call00001", "type": "function", "function": {
                       "name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
                   {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "sunny, 21"},
                   {"role": _A, "content": "Sunny and 21 C in Paris."}]),
    ("tool-call-no-definitions", [{"role": _U, "content": "Weather?"},
                                  {"role": _A, "content": "", "tool_calls": [{"id": "call00002", "type": "function",
                                                                              "function": {"name": "w",
                                                                                           "arguments": "{}"}}]},
                                  {"role": "tool", "tool_call_id": "call00002", "content": "rain"},
                                  {"role": _A, "content": "Rain."}]),
]
TOOLS = {"tool-call": [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}]}
CONVERSATIONS = [(name, messages) for name, messages in tg.CONVERSATIONS if name not in TYPED_SPECIALS] + SHAPES


def template(name: str) -> str:
    return (TEMPLATE_DIR / f"{name}.jinja").read_text()


def generation_template(name: str) -> str:
    text = template(name)
    for edit, (published, marked) in GENERATION_EDITS.items():
        if edit.split(" ")[0] != name:
            continue
        if text.count(published) != 1:
            raise AssertionError(f"{edit}: the assistant's output {published!r} is not in the template exactly once")
        text = text.replace(published, marked)
    return text


def hub_tokenizer(directory: Path, markers: dict[str, int] | None = None):
    """configs/tokenizer/mistral-v1 with <unk>, <s>, </s> declared special, as transformers loads a Hub checkpoint, and
    the given markers as special added tokens at their ids."""
    source = tg.TOKENIZER_DIR
    directory.mkdir(parents=True, exist_ok=True)
    root = json.loads((source / "tokenizer.json").read_text())
    root["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for i, t in [*enumerate(("<unk>", "<s>", "</s>")), *((i, t) for t, i in (markers or {}).items())]
    ]
    (directory / "tokenizer.json").write_text(json.dumps(root, ensure_ascii=False))
    config = json.loads((source / "tokenizer_config.json").read_text())
    config["split_special_tokens"] = False
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(directory)


def reference(tokenizer, name: str, messages: list[dict], tools: list[dict] | None = None,
              published: str | None = None, marked: str | None = None) -> dict:
    published = published or template(name)
    marked = marked or generation_template(name)
    try:
        text = tokenizer.apply_chat_template(messages, tools=tools, chat_template=published, tokenize=False)
    except TemplateError as e:
        return {"error": str(e)}
    if tokenizer.apply_chat_template(messages, tools=tools, chat_template=marked, tokenize=False) != text:
        raise AssertionError(f"{name}: the {{% generation %}} template renders other text than the published one")
    ids = list(tokenizer.apply_chat_template(messages, tools=tools, chat_template=published, tokenize=True,
                                             return_dict=True)["input_ids"])
    out = tokenizer.apply_chat_template(messages, tools=tools, chat_template=marked, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    if list(out["input_ids"]) != ids:
        raise AssertionError(f"{name}: the {{% generation %}} template tokenizes differently")
    labels = [t if m else IGNORE for t, m in zip(ids, out["assistant_masks"])]
    if all(label == IGNORE for label in labels):
        raise AssertionError(f"{name}: nothing trains")
    prompt = list(tokenizer.apply_chat_template(messages[:-1], chat_template=published, tokenize=True,
                                                add_generation_prompt=True, return_dict=True)["input_ids"])
    return {"input_ids": ids, "labels": labels, "prompt_ids": prompt}


# The templates rendered for a tokenizer without BOS, and the texts encoded plain there.
NO_BOS_TEMPLATES = ("mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3", "openhermes-2.5-chatml")
NO_BOS_TEXTS = ["hello", "", " leading space", "[INST] What is 2+2? [/INST]", "Question: why?\nAnswer: because.",
                "naïve café 😀", "Question: why?\nAnswer:", "Question: why?\nAnswer: no."]


def no_bos_tokenizer(directory: Path, post_processor: bool = True):
    """hub_tokenizer with tokenizer_config.json's bos_token null; without tokenizer.json's post-processor if asked."""
    hub_tokenizer(directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["bos_token"] = None
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    if not post_processor:
        root = json.loads((directory / "tokenizer.json").read_text())
        root["post_processor"] = None
        (directory / "tokenizer.json").write_text(json.dumps(root, ensure_ascii=False))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.bos_token is not None or tokenizer.bos_token_id is not None:
        raise AssertionError(f"{directory}: transformers still has a BOS ({tokenizer.bos_token!r})")
    return tokenizer


def build_no_bos(directory: Path) -> dict[str, list[dict]]:
    from make_preference_goldens import MISTRAL  # MistralTemplate.JINJA
    tokenizer = no_bos_tokenizer(directory / "no-bos")
    bare = no_bos_tokenizer(directory / "no-bos-no-post-processor", post_processor=False)
    out = {f"no-bos/{name}.jsonl": [reference(tokenizer, name, messages, TOOLS.get(n))
                                    for n, messages in CONVERSATIONS] for name in NO_BOS_TEMPLATES}
    out["no-bos/mistral.jsonl"] = [reference(tokenizer, "mistral", messages, TOOLS.get(n), MISTRAL, MISTRAL)
                                   for n, messages in CONVERSATIONS]
    out["no-bos/texts.jsonl"] = [{"text": t, "post_processor": tokenizer(t)["input_ids"],
                                  "no_post_processor": bare(t)["input_ids"]} for t in NO_BOS_TEXTS]
    return out


def build() -> dict[str, list[dict]]:
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = hub_tokenizer(Path(directory) / "plain")
        with_markers = hub_tokenizer(Path(directory) / "markers", HUB_MARKERS)
        out = {"conversations.jsonl": [{"name": n, "messages": m, **({"tools": TOOLS[n]} if n in TOOLS else {})}
                                       for n, m in CONVERSATIONS]}
        for name in NAMES:
            used = with_markers if name in OTHER_FAMILIES else tokenizer
            out[f"{name}.jsonl"] = [reference(used, name, messages, TOOLS.get(n)) for n, messages in CONVERSATIONS]
        out.update(build_no_bos(Path(directory)))
    return out


def write(out_dir: Path = OUT_DIR) -> dict[str, list[dict]]:
    built = build()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in built.items():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for name in NAMES:
        (out_dir / f"{name}.generation.jinja").write_text(generation_template(name))
    return built


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR
    built = write(target)
    summary = ", ".join(f"{n}: {sum('error' not in r for r in built[n + '.jsonl'])} rendered" for n in NAMES)
    print(f"make_hf_template_goldens: {len(CONVERSATIONS)} conversations in {target}; {summary}")
