using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.ChatTemplates;

/// <summary>
/// One feature at a time: slicing, namespace, loop variables, whitespace control, filters, string
/// methods, tests, operators, macros. Each expected string is what @huggingface/jinja 0.5.11
/// renders for the template (messages: a system "Be brief." and a user "Hello world", bos &lt;s&gt;,
/// eos &lt;/s&gt;, add_generation_prompt true).
/// </summary>
public sealed class ChatTemplateFeatureTests
{
    public sealed record Case(string Feature, string Template, string Expected)
    {
        public override string ToString() => $"{Feature}: {Template}";
    }

    private static readonly Case[] OracleCases =
    [
        new("Slicing", "{{ 'abcdef'[::-1] }}|{{ 'abcdef'[1:4] }}|{{ 'abcdef'[-2:] }}|{{ 'abcdef'[:-2] }}|{{ 'abcdef'[::2] }}|{{ 'abcdef'[4:1:-1] }}|{{ 'abc'[5:] }}",
            "fedcba|bcd|ef|abcd|ace|edc|"),
        new("Slicing", "{{ [1, 2, 3, 4][::-1] }}|{{ [1, 2, 3, 4][1:] }}|{{ [1, 2, 3, 4][:-1] }}|{{ messages[-1].content }}|{{ messages[::-1][0].role }}",
            "[4, 3, 2, 1]|[2, 3, 4]|[1, 2, 3]|Hello world|user"),
        new("Slicing", "{{ 'a😀b'[::-1] }}|{{ 'abcdef'[3:-1:-1] }}|{{ 'abcdef'[::0] }}|{{ 'abc'[-1] }}{{ 'abc'[0] }}",
            "b😀a|dcba||ca"),
        new("Namespace", "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
            "2"),
        new("Namespace", "{% set n = 0 %}{% for m in messages %}{% set n = n + 1 %}{{ n }}{% endfor %}|{{ n }}",
            "12|0"),
        new("Namespace", "{% set ns = namespace({'a': 1}, b=2) %}{% set ns.c = [ns.a, ns.b] %}{{ ns.a }}{{ ns.b }} {{ ns }} {{ ns.missing is defined }}",
            "12 {\"a\": 1, \"b\": 2, \"c\": [1, 2]} false"),
        new("Loops", "{% for x in [1, 2, 3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }} {{ loop.first }} {{ loop.last }} {{ loop.length }};{% endfor %}",
            "1032 true false 3;2121 false false 3;3210 false true 3;"),
        new("Loops", "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %}",
            "-2,1-3,2-,"),
        new("Loops", "{% for x in [1, 2, 3, 4] if x is even %}{{ x }}@{{ loop.index }}/{{ loop.length }} {% endfor %}",
            "2@1/2 4@2/2 "),
        new("Loops", "{% for x in [] %}a{% else %}empty{% endfor %}|{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}|{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}",
            "empty|a1b2|xy"),
        new("Loops", "{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}|{% for x in [1] %}{% continue %}{% else %}else runs{% endfor %}",
            "13|else runs"),
        new("Loops", "{% for i in range(3) %}{% for j in range(i) %}{{ i }}{{ j }} {% endfor %}{% endfor %}|{{ range(2, 8, 2) }}",
            "10 20 21 |[2, 4, 6]"),
        new("Whitespace", "  {% if true %}\n  yes\n  {% endif %}\nafter\n",
            "  yes\nafter"),
        new("Whitespace", "a  {%- if true -%}  b  {%- endif -%}  c|a {{- 'b' -}} c|a {#- c -#} b|x\n{# c #}\ny",
            "abc|abc|ab|x\ny"),
        new("Whitespace", "line\r\n  {% if true %}x{% endif %}\n\t{% if true %}tab{% endif %}\n  {{ 'expr' }}\n",
            "line\r\nxtab  expr"),
        new("Whitespace", "{% if true %}\n\nx{% endif %}|{% generation %}gen{% endgeneration %}|\n  {%- generation -%}  \n  y  {% endgeneration %}  z\n\n",
            "\nx|gen|y    z\n"),
        new("Filters", "{{ '  x  ' | trim }}|{{ 'hello world' | title }}|{{ 'hello World' | capitalize }}|{{ 'HeLLo' | lower }}{{ 'a' | upper }}|{{ [1, 2] | length }}{{ 'abc' | length }}{{ {'a': 1} | length }}",
            "x|Hello World|Hello World|helloA|231"),
        new("Filters", "{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}|{{ [1, 2, 3] | join('-') }}|{{ ['a', 'b'] | join }}|{{ x | default('d') }}|{{ '' | default('e', true) }}|{{ 'a-b' | replace('-', '+') }}",
            "32|1-2-3|ab|d|e|a+b"),
        new("Filters", "{{ [{'n': 1}, {'n': 2}, {'m': 3}] | map(attribute='n') | list }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | join }}",
            "[1, 2, undefined]|1|system"),
        new("Filters", "{{ {'a': 1, 'b': [1, 2.5, none, true]} | tojson }}|{{ {'a': [1, {'b': none}], 'e': {}} | tojson(indent=2) }}|{{ 'é\"\\\\\\n' | tojson }}|{{ 'é✓' | tojson(ensure_ascii=true) }}",
            "{\"a\": 1, \"b\": [1, 2.5, null, true]}|{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"e\": {}\n}|\"é\\\"\\\\\\n\"|\"\\u00e9\\u2713\""),
        new("Filters", "{{ {'a': 1} | items | list }}|{{ 5 | string }}{{ 2.0 | string }}{{ true | string }}|{{ '12' | int + 1 }}|{{ '1.5' | float }}|{{ 'x' | int }}|{{ -3 | abs }}|{{ 3.7 | int }}|{{ 'x' | safe }}",
            "[[\"a\", 1]]|52.0true|13|1.5|0|3|3|x"),
        new("Filters", "{{ [1, 2, 1, 3] | unique | list }}|{{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'a'] | sort }}|{{ 'line1\\nline2\\n\\nline4' | indent(2) }}|{{ [1, 2] | reverse }}|{{ {'b': 1, 'a': 2} | dictsort }}",
            "[1, 2, 3]|[1, 2, 3]|[\"A\", \"a\", \"b\"]|line1\n  line2\n\n  line4|[2, 1]|[[\"a\", 2], [\"b\", 1]]"),
        new("StringMethods", "{{ 'hello'.startswith('he') }}{{ 'hello'.endswith('lo') }}{{ 'hello'.startswith(('x', 'h')) }}|{{ '  a b  '.strip() }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}|{{ '\\n\\n a\\n'.strip('\\n') }}|",
            "truetruetrue|a b|a | a|a|"),
        new("StringMethods", "{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'x</think>y'.split('</think>')[-1] }}|{{ 'a b c'.split(none, 1) }}",
            "[\"a\", \"b\", \"\", \"c\"]|[\"a\", \"b\"]|[\"a\", \"b c\"]|y|[\"a\", \"b c\"]"),
        new("StringMethods", "{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'abc'.replace('', '-') }}|{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}|{{ 'hello wORLD'.title() }}|{{ 'abc'.length }}{{ messages.length }}|{{ 'ab'.capitalize() }}",
            "bba|-a-b-c-|HELLOhello|Hello WORLD|32|Ab"),
        new("Tests", "{{ messages is defined }}{{ nope is defined }}{{ nope is not defined }}{{ messages[0].nope is defined }}{{ none is defined }}{% if tools is not defined %} no tools{% endif %}",
            "truefalsetruefalsetrue no tools"),
        new("Tests", "{{ none is none }}{{ 1 is number }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is iterable }}{{ 1 is integer }}{{ 1.5 is integer }}{{ true is boolean }}{{ 2 is even }}{{ 3 is odd }}{{ nope is undefined }}{{ false is false }}{{ true is true }}{{ 'ab' is lower }}",
            "truetruetruetruetruetruetruefalsetruetruetruetruetruetruetrue"),
        new("Operators", "{{ 1 + 2 }} {{ 1.5 + 1 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 3 }} {{ 2 ** -1 }} {{ 'a' ~ 1 ~ 1.0 }} {{ 'a' + 'b' }} {{ 10 ** 21 }} {{ 0.1 + 0.2 }} {{ -0.0 }} {{ 1 - 1 }}",
            "3 2.5 3.5 2.0 3 1 -1 8 0.5 a11 ab 1e+21 0.30000000000000004 -0.0 0"),
        new("Operators", "{{ true }} {{ none }} {{ [1, 'a', none, true, 2.0] }} {{ {'k': 'v'} }} {{ 1.0 }} {{ 1.5 }} {{ 'x' + 2.0 }} {{ 'x' ~ [1, 'a'] }}",
            "true  [1, \"a\", null, true, 2] {\"k\": \"v\"} 1.0 1.5 x2 x1,a"),
        new("Operators", "{{ 1 == 1.0 }}{{ '1' == 1 }}{{ none == undefined_thing }}{{ [1] == [1] }}{{ messages == messages }}{{ 'a' in ['a'] }}{{ 'a' in 'cat' }}{{ 'k' in {'k': 1} }}{{ 'z' not in {'k': 1} }}{{ true == 1 }}",
            "truetruetruefalsetruetruetruetruetruetrue"),
        new("Operators", "{{ 1 if true else 2 }}{{ 'x' if false }}|{{ not true }}{{ true and 'x' }}{{ false or 'y' }}{{ [] or 'empty' }}{{ 0 or none }}|{{ 1 < 2 }}{{ 2 <= 1 }}{{ (1, 2)[1] }}",
            "1|falsexyempty|truefalse2"),
        new("Macros", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet(name='Cy') }}",
            "Hi Bob! Hi Al? Hi Cy!"),
        new("Macros", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}inside{% endcall %}|{% set x %}  block {{ 1 }}{% endset %}[{{ x }}]|{% filter upper %}abc{% endfilter %}|{% set a, b = 'p', 'q' %}{{ a }}{{ b }}",
            "<b>inside</b>|[  block 1]|ABC|pq"),
        new("Macros", "{% macro all() %}{{ varargs }} {{ kwargs }}{% endmacro %}{{ all(1, 2, k='v') }}",
            "[1, 2] {\"k\": \"v\"}"),
        new("Dicts", "{{ {'k': 'v'}.get('k') }}|{{ {'k': 'v'}.get('z', 'dflt') }}|{{ {'k': 'v'}.get('z') is none }}|{{ {'a': 1, 'b': 2}.keys() }}|{{ {'a': 1}.values() }}|{{ {'a': 1}.items() }}|{{ messages[0]['role'] }}{{ messages[0].role }}",
            "v|dflt|true|[\"a\", \"b\"]|[1]|[[\"a\", 1]]|systemsystem"),
    ];

    private static IEnumerable<TestCaseData> Cases() => OracleCases.Select((c, i) => new TestCaseData(c).SetArgDisplayNames($"{c.Feature} {i}"));

    internal static readonly ChatMessage[] Conversation = [new("system", "Be brief."), new("user", "Hello world")];

    internal static string Render(string template, ChatTemplateOptions? options = null) =>
        ChatTemplate.Parse(template).Render(Conversation, options ?? new ChatTemplateOptions { BosToken = "<s>", EosToken = "</s>" });

    [TestCaseSource(nameof(Cases))]
    public void RendersAsTheOracle(Case c) => Assert.That(Render(c.Template), Is.EqualTo(c.Expected), c.Template);
}
