"""What transformers' chat-template Jinja (jinja2 3.1.6's sandbox with transformers 5.18's globals and filters) renders
for small templates that each use one feature Hub templates reach for: loop variables and filters, namespace, tests,
tojson's options, Python's str methods, slicing, whitespace control, raise_exception, strftime_now's presence...
Written to data-pipeline/src/test/resources/golden/hf-templates/jinja-features.jsonl for JinjaFeatureGoldenTest,
which renders each with mixtune's Jinjava and expects the same text, or the failure or difference that README names.

One line per feature: {"name", "template", "record": {"messages", "tools"?}, "text"} or {..., "error"}.
Run: interop/.venv/bin/python interop/make_jinja_feature_goldens.py [out_file]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

REPO = Path(__file__).resolve().parent.parent
OUT_FILE = REPO / "data-pipeline" / "src" / "test" / "resources" / "golden" / "hf-templates" / "jinja-features.jsonl"

U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731
CHAT = [{"role": "system", "content": "  Be brief.  "}, U("Hi"), A("Hello"), U("Bye"), A("Ciao")]
THINK = [U("x</think>"), A("<think>r</think>\n\nans")]
TOOL_CHAT = [U("a"), {"role": "assistant", "content": "", "tool_calls": [{"id": "call000012345", "type": "function",
             "function": {"name": "f", "arguments": {"x": 1}}}]},
             {"role": "tool", "tool_call_id": "call000012345", "content": "r"}, U("b"), A("c")]
TOOLS = [{"type": "function", "function": {"name": "f", "description": "\u00e9 \"q\"", "parameters": {
    "type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer", "minimum": 0.5}},
    "required": ["z"]}, "return": {"type": "string"}}}]

FEATURES: list[tuple[str, str, list[dict], list[dict] | None]] = [
    ("loop.previtem", "{% for m in messages %}{% if loop.previtem is defined %}{{ loop.previtem.role }}>{% endif %}"
     "{{ m.role }};{% endfor %}", CHAT, None),
    ("loop.nextitem", "{% for m in messages %}{{ m.role }}{% if loop.nextitem is defined %}<{{ loop.nextitem.role }}"
     "{% endif %};{% endfor %}", CHAT, None),
    ("loop variables", "{% for m in messages %}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}"
     "{{ loop.revindex0 }}{{ loop.index }} {% endfor %}", CHAT, None),
    ("loop filter", "{% for k, v in tools[0].function.items() if k != 'return' %}{{ k }}{% if not loop.last %},"
     "{% endif %}{% endfor %}|{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}{% endfor %}",
     CHAT, TOOLS),
    ("loop controls", "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{% if loop.index0 == 3 "
     "%}{% break %}{% endif %}{{ m.role }};{% endfor %}", CHAT, None),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
     "{% set ns.s = ns.s + m.role[0] %}{% endfor %}{{ ns.n }}{{ ns.s }}", CHAT, None),
    ("tests", "{{ messages[0].content is string }} {{ messages[0] is mapping }} {{ messages is iterable }} "
     "{{ messages is sequence }} {{ messages[0].content is mapping }} {{ 3 is number }} {{ none is none }} "
     "{{ true is boolean }} {{ 'x' is iterable }} {{ 4 is divisibleby 2 }} {{ 3 is odd }}", CHAT, None),
    ("tojson", "{{ {'b': 1, 'a': 'é<>&\\''} | tojson }}|{{ tools | tojson }}", CHAT, TOOLS),
    ("tojson indent", "{% for t in tools %}{{ t | tojson(indent=4) }}{% endfor %}|{{ [] | tojson(indent=2) }}",
     CHAT, TOOLS),
    ("tojson separators sort_keys ensure_ascii", "{{ tools[0].function.parameters | tojson(separators=(',', ':'), "
     "sort_keys=true) }}|{{ tools[0].function.description | tojson(ensure_ascii=true) }}", CHAT, TOOLS),
    ("tojson nested dict literal", "{{ {'a': {'x': 1}} | tojson }}", CHAT, None),
    ("trim", "[{{ ' \u3000a\u00a0\u2007' | trim }}][{{ messages[0].content|trim }}][{{ '--a-' | trim('-') }}]",
     CHAT, None),
    ("str methods", "[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ 'xxaxx'.strip('x') }}]"
     "[{{ 'a\\n\\n'.rstrip('\\n') }}][{{ 'abc'.startswith('a') }}][{{ 'abc'.endswith('bc') }}][{{ 'ABC'.lower() }}]"
     "[{{ 'abc'.upper() }}][{{ 'hello world'.title() }}][{{ 'hello'.capitalize() }}][{{ 'aXaX'.replace('X', 'y', 1) }}]"
     "[{{ 'abc'.find('c') }}][{{ 'aaa'.count('a') }}]", CHAT, None),
    ("split", "[{{ 'a.b'.split('.')[0] }}][{{ ' a  b '.split()|join('|') }}][{{ 'a,b,,'.split(',')|length }}]"
     "[{{ 'a b c'.split(' ', 1)|join('|') }}][{{ messages[1].content.split('</think>')[-1] }}]"
     "[{{ messages[0].content.split('</think>')[-1] }}]", THINK, None),
    ("split printed", "{{ 'a b'.split() }}", CHAT, None),
    ("string index and slice", "{{ 'abc'[0] }}{{ 'abc'[-1] }}|{{ 'abcdef'[1:3] }}{{ 'abcdef'[-2:] }}", CHAT, None),
    ("list slice", "{{ messages[1:] | length }}{{ messages[:-1] | length }}{{ messages[-1].role }}", CHAT, None),
    ("step slice", "{{ (messages[::-1])[0].role }}", CHAT, None),
    ("undefined", "[{{ nothing }}][{{ messages[0].nope }}][{% if nothing %}y{% else %}n{% endif %}]"
     "[{{ nothing is defined }}]", CHAT, None),
    ("undefined attribute of undefined", "[{{ messages[0].nope.deeper }}]", CHAT, None),
    ("tools and documents defined", "{{ tools is defined }} {{ tools is none }} {{ documents is defined }} "
     "{{ documents is none }}", CHAT, None),
    ("not binds loosely", "{% if not messages|length == 1 %}many{% endif %}{% if not messages[0].role == 'user' %} "
     "not-user{% endif %}{% if not 'z' in messages[1].content %} no-z{% endif %}{% if not tools is defined %} u"
     "{% endif %} keep not a == b", CHAT, None),
    ("whitespace control", "A  \n  {%- if true %}  x  {% endif -%}  \n B {{- ' c ' -}} D\n{# c #}\nE\n  {% if true %}"
     "\nF{% endif %}", CHAT, None),
    ("length", "{{ messages | length }} {{ messages[0].content | length }} {{ 'abc'|length }}", CHAT, None),
    ("items", "{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}", CHAT, None),
    ("get", "{{ messages[0].get('role') }} {{ messages[0].get('nope', 'dflt') }} [{{ not messages[0].get('x') }}]",
     CHAT, None),
    ("in", "{{ 'role' in messages[0] }} {{ 'tool_calls' in messages[0] }} {{ 'x' in 'axb' }} {{ 'user' in ['user'] }}"
     "{% for m in messages %}{% if m['role'] not in ['tool', 'system'] %}{{ m.role[0] }}{% endif %}{% endfor %}",
     CHAT, None),
    ("none printed", "[{{ none }}][{{ messages[0].get('nope') }}]", CHAT, None),
    ("booleans printed", "{{ true }} {{ false }} {{ 1 == 1 }}", CHAT, None),
    ("lists printed", "{{ ['a', 1, true] }}", CHAT, None),
    ("map join selectattr", "{{ messages | map(attribute='role') | join(',') }} {{ messages | selectattr('role', "
     "'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role')"
     " | first }}", CHAT, None),
    ("dict equality", "{% set u = messages | selectattr('role', 'equalto', 'user') | list %}{% for m in messages %}"
     "{% if m == u[-1] %}last-user:{{ m.content }}{% endif %}{% endfor %}", CHAT, None),
    ("raise_exception", "{% if messages[0].role == 'system' %}{{ raise_exception('No system: ' + messages[0].content) }}"
     "{% endif %}", CHAT, None),
    ("strftime_now defined", "{% if strftime_now is defined %}{{ strftime_now('%Y') | length }}{% endif %}", CHAT,
     None),
    ("macro and set block", "{% macro r(m) %}<{{ m.role }}>{% endmacro %}{% for m in messages %}{{ r(m) }}{% endfor %}"
     "{% set x %}hi {{ messages[0].role }}{% endset %}[{{ x }}]", CHAT, None),
    ("inline if and concatenation", "{{ 'a' if messages[0].role == 'system' else 'b' }}{{ 'c' if false }}"
     "{% set l = [] %}{% for m in messages %}{% set l = l + [m.role] %}{% endfor %}{{ l | join(' ') }}"
     "{{ 3 | string }} {{ '5' | int + 1 }}", CHAT, None),
    ("numbers", "{{ 1.0 }} {{ 2.5 * 2 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ 7 % 3 }}", CHAT, None),
    ("tool calls", "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
     "{{ c.function.name }}{{ c.function.arguments | tojson }}{{ c.id[-9:] }}{% endfor %}{% endif %}"
     "{% if m.role == 'tool' %}[{{ m.content }}|{{ m.tool_call_id }}]{% endif %}{% endfor %}", TOOL_CHAT, TOOLS),
    ("backslash newline in a string", "{{ \"a.\\\nb\" }}", CHAT, None),
]


def reference(template: str, messages: list[dict], tools: list[dict] | None) -> dict:
    try:
        rendered, _ = render_jinja_template([messages], tools=tools, chat_template=template, bos_token="<s>",
                                            eos_token="</s>")
        return {"text": rendered[0]}
    except Exception as e:  # noqa: BLE001 - any failure is the reference's answer
        return {"error": f"{type(e).__name__}: {e}"}


def build() -> list[dict]:
    rows = []
    for name, template, messages, tools in FEATURES:
        record = {"messages": messages, **({"tools": tools} if tools else {})}
        rows.append({"name": name, "template": template, "record": record, **reference(template, messages, tools)})
    return rows


def write(out_file: Path = OUT_FILE) -> list[dict]:
    rows = build()
    out_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_FILE
    written = write(target)
    print(f"make_jinja_feature_goldens: {len(written)} features in {target}, "
          f"{sum('error' in r for r in written)} raise in jinja2")
