#!/usr/bin/env node
// Validates the objects of one rendered kustomize overlay (a multi-document YAML file).
//
// usage: node validate.js --cpserve BIN --entrypoint SCRIPT --kinds Kind=N,...
//                         --replicas name=N,... --gpus N RENDERED.yaml
//
// Checks, each failure printed and counted (exit 1 when any):
//  1. schema: every object is validated by its kubernetes-models class (the Kubernetes
//     OpenAPI schema: types, required fields, enums, formats); kinds without a model fail.
//  2. strict fields: every field is one the API type declares (the schemas accept unknown
//     fields, as the API server does without strict validation; typos must not pass).
//  3. kinds and counts equal --kinds; StatefulSet replicas equal --replicas; the GPUs
//     requested by all pods (replicas x nvidia.com/gpu limits) equal --gpus.
//  4. every container has readiness and liveness probes, resource requests and limits
//     (cpu and memory), a non-root, read-only, no-capability securityContext, and a
//     pinned image tag.
//  5. every cpserve flag in the container args, and those cpserve-k8s-entrypoint derives
//     for each pod of a StatefulSet, is one `cpserve ROLE --help` lists, and cpserve
//     accepts the whole command line ($(VAR) references resolved from the ConfigMaps);
//     a pool's --world_size equals its StatefulSet's replicas.
'use strict';

const fs = require('fs');
const path = require('path');
const {execFileSync, spawnSync} = require('child_process');
const YAML = require('yaml');

function parseArgs(argv) {
  const opts = {files: []};
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i].startsWith('--')) {
      opts[argv[i].slice(2)] = argv[++i];
    } else {
      opts.files.push(argv[i]);
    }
  }
  for (const k of ['cpserve', 'entrypoint', 'kinds', 'replicas', 'gpus']) {
    if (opts[k] === undefined) throw new Error(`missing --${k}`);
  }
  if (opts.files.length !== 1) throw new Error('expected one rendered YAML file');
  return opts;
}

function parseMap(text) {
  const map = new Map();
  for (const item of text.split(',').filter(Boolean)) {
    const [k, v] = item.split('=');
    map.set(k, Number(v));
  }
  return map;
}

const errors = [];
function fail(where, message) {
  errors.push(`${where}: ${message}`);
}

// --- 1. schema -----------------------------------------------------------------------

function modelClass(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : [null, apiVersion];
  const modulePath = group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
  let mod;
  try {
    mod = require(modulePath);
  } catch (e) {
    return null;
  }
  return mod[kind] ? {cls: mod[kind], dts: require.resolve(`${modulePath}/${kind}`).replace(/\.js$/, ".d.ts")} : null;
}

// --- 2. strict fields, from the models' TypeScript declarations ------------------------

// Returns {fields: Map(name -> {type, file})} for interface I<Name> declared in `dtsFile`.
const interfaceCache = new Map();
function loadInterface(dtsFile) {
  if (interfaceCache.has(dtsFile)) return interfaceCache.get(dtsFile);
  const text = fs.readFileSync(dtsFile, 'utf8');
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    imports.set(m[1], m[2]);
  }
  const name = path.basename(dtsFile, '.d.ts');
  const head = new RegExp(`^export interface I${name}( extends TypeMeta)? \\{$`, 'm').exec(text);
  if (!head) throw new Error(`no interface I${name} in ${dtsFile}`);
  const body = text.slice(head.index, text.indexOf('\n}', head.index));
  const fields = new Map();
  if (head[1]) {
    fields.set('apiVersion', {file: null, isArray: false});
    fields.set('kind', {file: null, isArray: false});
  }
  // Top-level members only (4 spaces); deeper lines belong to inline types.
  for (const m of body.matchAll(/^ {4}"([^"]+)"\??: (.*)$/gm)) {
    const type = m[2].replace(/;$/, '');
    const named = /^(?:Array<)?(I\w+)>?$/.exec(type);
    let file = null;
    if (named && imports.has(named[1])) {
      const spec = imports.get(named[1]);
      file = spec.startsWith('.') ? path.resolve(path.dirname(dtsFile), `${spec}.d.ts`)
                                  : require.resolve(spec).replace(/\.js$/, '.d.ts');
      if (!fs.existsSync(file)) file = null;
    }
    fields.set(m[1], {file, isArray: type.startsWith('Array<')});
  }
  const result = {fields};
  interfaceCache.set(dtsFile, result);
  return result;
}

function checkFields(value, dtsFile, where) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return;
  const {fields} = loadInterface(dtsFile);
  for (const [key, child] of Object.entries(value)) {
    const field = fields.get(key);
    if (!field) {
      fail(where, `unknown field '${key}' (${path.basename(dtsFile, '.d.ts')})`);
      continue;
    }
    if (!field.file) continue;  // scalar, map or inline type
    const items = field.isArray && Array.isArray(child) ? child : [child];
    items.forEach((item, i) =>
                      checkFields(item, field.file, `${where}.${key}${field.isArray ? `[${i}]` : ''}`));
  }
}

// --- 4. containers ---------------------------------------------------------------------

function podTemplate(obj) {
  return obj.spec && obj.spec.template && obj.spec.template.spec;
}

function checkContainer(c, where) {
  if (!c.readinessProbe) fail(where, 'no readinessProbe');
  if (!c.livenessProbe) fail(where, 'no livenessProbe');
  const res = c.resources || {};
  for (const kind of ['requests', 'limits']) {
    for (const r of ['cpu', 'memory']) {
      if (!res[kind] || res[kind][r] === undefined) fail(where, `no resources.${kind}.${r}`);
    }
  }
  const sc = c.securityContext || {};
  if (sc.runAsNonRoot !== true) fail(where, 'securityContext.runAsNonRoot is not true');
  if (sc.readOnlyRootFilesystem !== true) fail(where, 'securityContext.readOnlyRootFilesystem is not true');
  if (sc.allowPrivilegeEscalation !== false) fail(where, 'securityContext.allowPrivilegeEscalation is not false');
  const drop = (sc.capabilities && sc.capabilities.drop) || [];
  if (!drop.includes('ALL')) fail(where, 'securityContext.capabilities.drop lacks ALL');
  if (!sc.seccompProfile || sc.seccompProfile.type !== 'RuntimeDefault') {
    fail(where, 'securityContext.seccompProfile is not RuntimeDefault');
  }
  const tag = /:([^/:@]+)$/.exec(c.image || '');
  if (!tag || tag[1] === 'latest') fail(where, `image '${c.image}' has no pinned tag`);
}

// --- 5. flags ----------------------------------------------------------------------------

const helpCache = new Map();
function acceptedFlags(cpserve, role) {
  if (!helpCache.has(role)) {
    const help = execFileSync(cpserve, [role, '--help'], {encoding: 'utf8'});
    const flags = new Set([...help.matchAll(/^ {2}--(\w+)(?: \(default: .*\))?$/gm)].map((m) => m[1]));
    if (flags.size < 3) throw new Error(`cannot read the flags of 'cpserve ${role} --help'`);
    helpCache.set(role, flags);
  }
  return helpCache.get(role);
}

// The container's environment as the kubelet builds it: envFrom ConfigMaps, then env.
function containerEnv(c, configMaps, obj, ordinal) {
  const env = new Map();
  for (const src of c.envFrom || []) {
    const cm = src.configMapRef && configMaps.get(src.configMapRef.name);
    if (!cm) {
      fail(`${obj.metadata.name}/${c.name}`, `envFrom references a missing ConfigMap`);
      continue;
    }
    for (const [k, v] of Object.entries(cm.data || {})) env.set(k, String(v));
  }
  for (const e of c.env || []) {
    if (e.value !== undefined) {
      env.set(e.name, e.value);
    } else if (e.valueFrom && e.valueFrom.fieldRef && e.valueFrom.fieldRef.fieldPath === 'metadata.name') {
      env.set(e.name, `${obj.metadata.name}-${ordinal}`);
    } else if (e.valueFrom && e.valueFrom.fieldRef && e.valueFrom.fieldRef.fieldPath === 'status.podIP') {
      env.set(e.name, `10.0.0.${ordinal + 1}`);  // any pod IP: the flag's value must parse
    } else if (e.valueFrom && e.valueFrom.configMapKeyRef) {
      const cm = configMaps.get(e.valueFrom.configMapKeyRef.name);
      env.set(e.name, cm && cm.data ? cm.data[e.valueFrom.configMapKeyRef.key] : undefined);
    }
  }
  return env;
}

function expand(arg, env, where) {
  return arg.replace(/\$\((\w+)\)/g, (whole, name) => {
    if (!env.has(name)) {
      fail(where, `${whole} refers to an undefined variable`);
      return whole;
    }
    return env.get(name);
  });
}

function flagName(arg) {
  const m = /^--?([^=]+)/.exec(arg);
  return m ? m[1] : null;
}

function checkCommand(opts, obj, c, configMaps, replicas) {
  const where = `${obj.kind}/${obj.metadata.name}/${c.name}`;
  const command = c.command || [];
  if (command.length !== 1 || command[0] !== 'cpserve-k8s-entrypoint') {
    fail(where, `command is ${JSON.stringify(command)}, expected ["cpserve-k8s-entrypoint"]`);
    return;
  }
  const role = (c.args || [])[0];
  const pods = obj.kind === 'StatefulSet' ? replicas : 1;
  for (let ordinal = 0; ordinal < pods; ++ordinal) {
    const env = containerEnv(c, configMaps, obj, ordinal);
    const args = (c.args || []).map((a) => expand(a, env, where));
    // The entrypoint's own output: the full command line it would exec for this pod.
    const childEnv = {PATH: process.env.PATH, CPSERVE_ENTRYPOINT_DRY_RUN: '1', CPSERVE_BIN: opts.cpserve};
    for (const [k, v] of env) childEnv[k] = v;
    const run = spawnSync('sh', [opts.entrypoint, ...args], {encoding: 'utf8', env: childEnv});
    if (run.status !== 0) {
      fail(`${where}#${ordinal}`, `entrypoint failed: ${run.stderr.trim()}`);
      continue;
    }
    const argv = run.stdout.replace(/\n$/, '').split('\n');
    const flags = argv.slice(2);
    const accepted = acceptedFlags(opts.cpserve, role);
    const values = new Map();
    for (let i = 0; i < flags.length; ++i) {
      const name = flagName(flags[i]);
      if (name === null || !accepted.has(name)) {
        fail(`${where}#${ordinal}`, `'${flags[i]}' is not a flag of 'cpserve ${role}'`);
        continue;
      }
      values.set(name, flags[i].includes('=') ? flags[i].slice(flags[i].indexOf('=') + 1) : flags[++i]);
    }
    // cpserve parses the flags in order and stops at the first bad one, so with --help
    // last it exits 0 only when every name and value before it is accepted.
    const check = spawnSync(opts.cpserve, [role, ...flags, '--help'], {encoding: 'utf8'});
    if (check.status !== 0) {
      fail(`${where}#${ordinal}`, `cpserve rejects its command line: ${check.stderr.trim()}`);
    }
    if (obj.kind === 'StatefulSet') {
      if (values.get('rank') !== String(ordinal)) fail(`${where}#${ordinal}`, `--rank is ${values.get('rank')}`);
      if (Number(values.get('world_size')) !== replicas) {
        fail(where, `--world_size=${values.get('world_size')} but replicas=${replicas}`);
      }
      const leader = `${obj.metadata.name}-0.${obj.spec.serviceName}:${values.get('port')}`;
      if ((ordinal === 0) !== !values.has('leader') || (ordinal > 0 && values.get('leader') !== leader)) {
        fail(`${where}#${ordinal}`, `--leader is ${values.get('leader')}, expected ${ordinal ? leader : 'none'}`);
      }
    }
  }
}

// --- main --------------------------------------------------------------------------------

function main() {
  const opts = parseArgs(process.argv.slice(2));
  opts.entrypoint = path.resolve(opts.entrypoint);
  const file = opts.files[0];
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'));
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length) fail(file, `YAML: ${doc.errors[0].message}`);
    const obj = doc.toJS();
    if (obj) objects.push(obj);
  }

  const kinds = new Map();
  const configMaps = new Map();
  for (const obj of objects) {
    kinds.set(obj.kind, (kinds.get(obj.kind) || 0) + 1);
    if (obj.kind === 'ConfigMap') configMaps.set(obj.metadata.name, obj);
  }

  for (const obj of objects) {
    const where = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
    const model = modelClass(obj.apiVersion, obj.kind);
    if (!model) {
      fail(where, `no Kubernetes schema for ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    try {
      new model.cls(obj).validate();
    } catch (e) {
      fail(where, `schema: ${e.message}`);
    }
    checkFields(obj, model.dts, where);
  }

  // 3. kinds, counts, replicas, GPUs.
  const expectedKinds = parseMap(opts.kinds);
  for (const kind of new Set([...kinds.keys(), ...expectedKinds.keys()])) {
    if ((kinds.get(kind) || 0) !== (expectedKinds.get(kind) || 0)) {
      fail(file, `${kinds.get(kind) || 0} ${kind} objects, expected ${expectedKinds.get(kind) || 0}`);
    }
  }
  const expectedReplicas = parseMap(opts.replicas);
  let gpus = 0;
  for (const obj of objects) {
    const spec = podTemplate(obj);
    if (!spec) continue;
    const replicas = obj.spec.replicas === undefined ? 1 : obj.spec.replicas;
    if (obj.kind === 'StatefulSet' && replicas !== expectedReplicas.get(obj.metadata.name)) {
      fail(obj.metadata.name, `replicas=${replicas}, expected ${expectedReplicas.get(obj.metadata.name)}`);
    }
    for (const c of [...(spec.initContainers || []), ...spec.containers]) {
      const where = `${obj.kind}/${obj.metadata.name}/${c.name}`;
      checkContainer(c, where);
      checkCommand(opts, obj, c, configMaps, replicas);
      const limits = (c.resources && c.resources.limits) || {};
      gpus += replicas * Number(limits['nvidia.com/gpu'] || 0);
    }
  }
  if (gpus !== Number(opts.gpus)) fail(file, `${gpus} GPUs requested, expected ${opts.gpus}`);

  const summary = [...kinds.entries()].sort().map(([k, n]) => `${k}=${n}`).join(' ');
  console.log(`${path.basename(file)}: ${objects.length} objects: ${summary}; GPUs: ${gpus}`);
  for (const e of errors) console.log(`FAIL ${e}`);
  process.exit(errors.length ? 1 : 0);
}

main();
