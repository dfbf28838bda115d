/**
 * The Go-template renderer behind the Helm chart test: the text/template and Helm semantics it must get
 * right for a rendering to mean what `helm template` would produce.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Renderer, goFloat, type GoValue } from '../../support/go-template.js';

function render(source: string, data: GoValue = {}, defines = ''): string {
  const r = new Renderer();
  if (defines !== '') r.add('_helpers.tpl', defines);
  r.add('t.yaml', source);
  return r.render('t.yaml', data);
}

describe('go-template: text/template', () => {
  it('trims whitespace at {{- and -}}, and reads {{-3}} as the number -3', () => {
    assert.equal(render('a  \n {{- "x" -}} \n  b'), 'axb');
    assert.equal(render('a {{- /* a comment */ -}} b'), 'ab');
    assert.equal(render('a {{/* kept spaces */}} b'), 'a  b');
    assert.equal(render('{{-3}}'), '-3');
  });

  it('prints float64 values as Go does: 1e+06, not 1000000 (pipe through int for that)', () => {
    const data = { Values: { bytes: 4194304, small: 100000, half: 0.5, tiny: 0.00001 } };
    assert.equal(
      render('{{ .Values.bytes }} {{ .Values.small }} {{ .Values.half }} {{ .Values.tiny }}', data),
      '4.194304e+06 100000 0.5 1e-05',
    );
    assert.equal(render('{{ .Values.bytes | int }} {{ int .Values.bytes }}', data), '4194304 4194304');
    assert.equal(goFloat(1e6), '1e+06');
    assert.equal(goFloat(123456), '123456');
  });

  it('prints a missing key as <no value> but refuses a field of nil', () => {
    assert.equal(render('[{{ .Values.missing }}]', { Values: {} }), '[<no value>]');
    assert.throws(() => render('{{ .Values.missing.deeper }}', { Values: {} }), /t\.yaml:1: nil pointer evaluating interface \{\}\.deeper/);
    assert.throws(() => render('{{ .Values.name.first }}', { Values: { name: 'x' } }), /can't evaluate field first in type string/);
  });

  it('runs if / else if / else, with, and range (maps in key order, $key and $value, else when empty)', () => {
    const t = '{{ if eq .n 1 }}one{{ else if eq .n 2 }}two{{ else }}many{{ end }}';
    assert.deepEqual(
      [1n, 2n, 3n].map((n) => render(t, { n })),
      ['one', 'two', 'many'],
    );
    assert.equal(render('{{ with .a }}[{{ .b }}]{{ else }}none{{ end }}', { a: { b: 'x' } }), '[x]');
    assert.equal(render('{{ with .a }}[{{ .b }}]{{ else }}none{{ end }}', { a: {} }), 'none');
    assert.equal(render('{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}', { m: { b: '2', a: '1' } }), 'a=1;b=2;');
    assert.equal(render('{{ range $i, $v := .l }}{{ $i }}:{{ . }} {{ end }}', { l: ['x', 'y'] }), '0:x 1:y ');
    assert.equal(render('{{ range .l }}x{{ else }}empty{{ end }}', { l: [] }), 'empty');
  });

  it('scopes variables to their block, lets = assign an outer one, and binds $ to the data of each template', () => {
    assert.equal(render('{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ end }}{{ $x }}'), 'b');
    assert.throws(() => render('{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}'), /undefined variable: \$y/);
    const defines = '{{- define "who" -}}{{ $.name }}/{{ .name }}{{- end -}}';
    assert.equal(
      render('{{ range .items }}{{ include "who" . }} {{ end }}', { items: [{ name: 'a' }, { name: 'b' }] }, defines),
      'a/a b/b ',
    );
    assert.equal(render('{{ template "who" .inner }}', { inner: { name: 'i' } }, defines), 'i/i');
  });

  it('short-circuits and/or, as Go 1.18+ does', () => {
    assert.equal(render('{{ and false (fail "not evaluated") }}'), 'false');
    assert.equal(render('{{ or "first" (fail "not evaluated") }}'), 'first');
    assert.throws(() => render('{{ and true (fail "evaluated") }}'), /evaluated/);
  });

  it('refuses comparisons of different kinds (a values float against an int literal), as Helm does', () => {
    assert.throws(
      () => render('{{ gt .Values.replicas 1 }}', { Values: { replicas: 2 } }),
      /incompatible types for comparison \(int and float64\)/,
    );
    assert.equal(render('{{ gt (int .Values.replicas) 1 }}', { Values: { replicas: 2 } }), 'true');
    assert.throws(() => render('{{ eq .Values.missing "x" }}', { Values: {} }), /invalid type for comparison/);
  });

  it('type-checks function parameters: indent takes an int, b64enc a string', () => {
    assert.throws(() => render('{{ indent .n "x" }}', { n: 2 }), /expected int; got float64/);
    assert.equal(render('{{ indent 2 "a\\nb" }}'), '  a\n  b');
    assert.throws(() => render('{{ b64enc .n }}', { n: 2 }), /expected string; got float64/);
    assert.throws(() => render('{{ nosuch 1 }}'), /function "nosuch" not defined/);
  });
});

describe('go-template: Helm and sprig functions', () => {
  it('toYaml sorts keys like sigs.k8s.io/yaml and quotes YAML 1.1 booleans; nindent indents every line', () => {
    const data = { m: { b: [1, 2], a: 'on', c: { d: 'x' } } };
    assert.equal(render('k:{{ toYaml .m | nindent 2 }}', data), 'k:\n  a: "on"\n  b:\n  - 1\n  - 2\n  c:\n    d: x');
    assert.equal(render('{{ toYaml .e }}', { e: {} }), '{}');
  });

  it('quote, default, required, printf, trunc, trimPrefix, trimSuffix, contains, lower, dict, index, hasKey, len, mulf', () => {
    assert.equal(render('{{ quote "a\\"b" }} {{ .n | quote }}', { n: 1e6 }), '"a\\"b" "1e+06"');
    assert.equal(render('{{ default "d" .v }}|{{ default "d" .e }}|{{ .v | default "d" }}', { v: 'x', e: '' }), 'x|d|x');
    assert.throws(() => render('{{ required "set image.repository" .Values.image }}', { Values: {} }), /set image\.repository/);
    assert.equal(render('{{ printf "%s-%s:%d" "a" "b" 3 }}'), 'a-b:3');
    assert.equal(render('{{ printf "%d" .f }}', { f: 3 }), '%!d(float64=3)');
    assert.equal(render('{{ "abcdef-" | trunc 6 | trimSuffix "-" }}|{{ "abc-" | trimSuffix "-" }}'), 'abcdef|abc');
    assert.equal(render('{{ contains "gate" "tollgate" }}'), 'true');
    assert.equal(render('{{ "os.environ/X" | trimPrefix "os.environ/" }}|{{ "x" | trimPrefix "os.environ/" }}'), 'X|x');
    assert.equal(render('{{ lower "Redis_Password" }}'), 'redis_password');
    assert.equal(render('{{ $d := dict "a" 1 "b" "x" }}{{ index $d "b" }}{{ hasKey $d "a" }}{{ len $d }}'), 'xtrue2');
    assert.equal(render('{{ int (mulf 4 1048576) }} {{ int (mulf 0.5 1048576) }}'), '4194304 524288');
  });

  it('add (int64), float64, divf, hasSuffix, regexMatch, kindIs and concat, as sprig computes them', () => {
    const data = { Values: { a: 15, b: 30, q: '256Mi', l: [1], m: ['x'] } };
    assert.equal(render('{{ add .Values.a .Values.b 5 }} {{ lt (int 40) (add .Values.a .Values.b 5) }}', data), '50 true');
    assert.equal(render('{{ add 1.9 "2" }}'), '3');
    assert.equal(render('{{ float64 "660" }} {{ float64 "0.5" }} {{ float64 "x" }} {{ le (float64 "600") 600.0 }}'), '660 0.5 0 true');
    assert.equal(render('{{ int (divf (mulf 268435456 80) 100) }} {{ divf 1 4 }}'), '214748364 0.25');
    assert.equal(render('{{ hasSuffix "Mi" .Values.q }} {{ hasSuffix "Gi" .Values.q }}', data), 'true false');
    assert.equal(render('{{ regexMatch `^[0-9]+(Mi|Gi)$` .Values.q }} {{ regexMatch "^x" .Values.q }}', data), 'true false');
    assert.equal(render('{{ len (concat .Values.l .Values.m (list 2 3)) }}', data), '4');
    assert.throws(() => render('{{ concat .Values.q }}', data), /Cannot concat type string as list/);
    assert.equal(
      render(
        '{{ kindIs "string" .Values.q }} {{ kindIs "float64" .Values.a }} {{ kindIs "string" .Values.a }} {{ kindIs "slice" .Values.l }}',
        data,
      ),
      'true true false true',
    );
  });

  it('b64enc and sha256sum as Go computes them; fail stops rendering', () => {
    assert.equal(render('{{ b64enc "sk-test" }}'), Buffer.from('sk-test').toString('base64'));
    assert.equal(render('{{ sha256sum "abc" }}'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    assert.throws(() => render('{{ fail "refused" }}'), /t\.yaml:1: refused/);
  });

  it('refuses a template defined twice and an unclosed block', () => {
    const r = new Renderer();
    r.add('_a.tpl', '{{ define "x" }}1{{ end }}');
    assert.throws(() => r.add('_b.tpl', '{{ define "x" }}2{{ end }}'), /template x defined twice/);
    assert.throws(() => render('{{ if true }}x'), /missing \{\{end\}\}/);
  });
});
