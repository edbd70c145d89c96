// A scripted node-opcua client for interop tests: runs a JSON plan and prints one JSON result.
//
// Usage: node client.mjs '<plan json>'   or   node client.mjs < plan.json
// The result is the single stdout line starting with "@@RESULT@@ " (node-opcua logs warnings to
// stdout as well). tests/node_opcua.py runs this and parses the result; the plan schema is
// documented there.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { OPCUACertificateManager } from "node-opcua-certificate-manager";
import {
    AttributeIds,
    BrowseDirection,
    ClientMonitoredItem,
    ClientSubscription,
    DataChangeFilter,
    DataChangeTrigger,
    DataType,
    DeadbandType,
    MessageSecurityMode,
    MonitoringMode,
    NodeClass,
    OPCUAClient,
    SecurityPolicy,
    TimestampsToReturn,
    UserTokenType,
    VariantArrayType,
    constructEventFilter,
    makeResultMask,
    resolveNodeId,
} from "node-opcua-client";

const RESULT_MARKER = "@@RESULT@@ ";
const SUBSCRIBED_MARKER = "@@SUBSCRIBED@@ ";
const HIERARCHICAL_REFERENCES = resolveNodeId("i=33");
const OBJECTS_FOLDER = "i=85";
const ROOT_FOLDER = "i=84";
const SERVER_OBJECT = "i=2253";

// Tells a harness reading stdout as it comes (a benchmark) that a subscription is in place.
function announce(step, items) {
    process.stdout.write(`${SUBSCRIBED_MARKER}${JSON.stringify({ op: step.op, name: step.name ?? null,
                                                                  items })}\n`);
}

// Write the result and exit once it is flushed (stdout to a pipe is asynchronous in Node: an
// immediate process.exit() would cut a long result short).
function finish(result, code) {
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`, () => process.exit(code));
}

function readPlan() {
    const arg = process.argv[2];
    const text = arg && arg !== "-" ? arg : fs.readFileSync(0, "utf8");
    return JSON.parse(text);
}

function statusName(statusCode) {
    if (statusCode === undefined || statusCode === null) return null;
    return statusCode.name ?? String(statusCode);
}

function statusFromError(error) {
    const match = /\b(Bad[A-Za-z]+)\b/.exec(String(error?.message ?? error));
    return match ? match[1] : null;
}

function expectOk(expect, status) {
    if (expect === undefined) return undefined;
    const allowed = Array.isArray(expect) ? expect : [expect];
    return allowed.includes(status);
}

// JSON for OPC UA values: numbers, strings, booleans, arrays, dates as ISO, the rest as strings.
function toJson(value) {
    if (value === null || value === undefined) return null;
    if (typeof value === "bigint") return Number(value);
    if (value instanceof Date) return value.toISOString();
    if (Array.isArray(value) || ArrayBuffer.isView(value)) {
        if (Buffer.isBuffer(value)) return value.toString("base64");
        return Array.from(value, toJson);
    }
    if (typeof value === "object") {
        if (value.constructor?.name === "NodeId" || value.constructor?.name === "ExpandedNodeId") {
            return value.toString();
        }
        if (value.constructor?.name === "LocalizedText") return value.text ?? null;
        if (value.constructor?.name === "QualifiedName") return value.toString();
        if (value.constructor?.name === "StatusCode" || value.constructor?.name === "ConstantStatusCode") {
            return statusName(value);
        }
        if (typeof value.toJSON === "function") return value.toJSON();
        return String(value);
    }
    return value;
}

function variantJson(variant) {
    return variant ? toJson(variant.value) : null;
}

function dataValueJson(dataValue) {
    return {
        status: statusName(dataValue.statusCode),
        value: variantJson(dataValue.value),
        dataType: dataValue.value ? DataType[dataValue.value.dataType] : null,
        sourceTimestamp: toJson(dataValue.sourceTimestamp),
        serverTimestamp: toJson(dataValue.serverTimestamp),
    };
}

class Runner {
    constructor(plan, session, client) {
        this.plan = plan;
        this.session = session;
        this.client = client;
        this.aliases = new Map();
        this.namespaceCache = null;
    }

    async namespaceArray() {
        if (!this.namespaceCache) this.namespaceCache = await this.session.readNamespaceArray();
        return this.namespaceCache;
    }

    async namespaceIndex(ns) {
        if (ns === undefined || ns === null) return 0;
        if (typeof ns === "number") return ns;
        const index = (await this.namespaceArray()).indexOf(ns);
        if (index < 0) throw new Error(`namespace not on the server: ${ns}`);
        return index;
    }

    // A node reference: "ns=2;s=X", "nsu=<uri>;s=X", "$alias", or {path: [...], from: ref}.
    async nodeId(ref) {
        if (ref === undefined || ref === null) throw new Error("missing node reference");
        if (typeof ref === "object") {
            if (ref.path) return (await this.translate(ref.path, ref.from)).nodeId;
            if (ref.nodeId) return this.nodeId(ref.nodeId);
            throw new Error(`bad node reference ${JSON.stringify(ref)}`);
        }
        if (ref.startsWith("$")) {
            const found = this.aliases.get(ref.slice(1));
            if (!found) throw new Error(`unknown alias ${ref}`);
            return found;
        }
        const nsu = /^nsu=([^;]+);(.*)$/.exec(ref);
        if (nsu) return resolveNodeId(`ns=${await this.namespaceIndex(nsu[1])};${nsu[2]}`);
        return resolveNodeId(ref);
    }

    // A browse-name path element: "Name" (namespace 0), "<uri>|Name", or {ns: uri|index, name}.
    async qualifiedName(element) {
        if (typeof element === "string") {
            const bar = element.lastIndexOf("|");
            if (bar < 0) return { namespaceIndex: 0, name: element };
            return { namespaceIndex: await this.namespaceIndex(element.slice(0, bar)),
                     name: element.slice(bar + 1) };
        }
        return { namespaceIndex: await this.namespaceIndex(element.ns), name: element.name };
    }

    async translate(pathElements, from) {
        const start = await this.nodeId(from ?? OBJECTS_FOLDER);
        const elements = [];
        for (const element of pathElements) {
            elements.push({
                referenceTypeId: HIERARCHICAL_REFERENCES,
                isInverse: false,
                includeSubtypes: true,
                targetName: await this.qualifiedName(element),
            });
        }
        const result = await this.session.translateBrowsePath({
            startingNode: start,
            relativePath: { elements },
        });
        const status = statusName(result.statusCode);
        const targets = result.targets ?? [];
        if (status !== "Good" || targets.length === 0) {
            return { status, nodeId: null, targets: [] };
        }
        const ids = targets.map((t) => resolveNodeId(t.targetId.toString()));
        return { status, nodeId: ids[0], targets: ids.map((id) => id.toString()) };
    }

    // ---- steps -------------------------------------------------------------------------------

    async browse(step) {
        const found = await this.translate(step.path, step.from);
        if (step.save && found.nodeId) this.aliases.set(step.save, found.nodeId);
        return { status: found.status, nodeId: found.nodeId ? found.nodeId.toString() : null,
                 targets: found.targets };
    }

    async read(step) {
        const refs = step.nodes ?? [step.node];
        const attributeId = step.attribute ? AttributeIds[step.attribute] : AttributeIds.Value;
        const nodesToRead = [];
        for (const ref of refs) nodesToRead.push({ nodeId: await this.nodeId(ref), attributeId });
        const values = await this.session.read(nodesToRead);
        return { values: values.map(dataValueJson) };
    }

    async write(step) {
        const dataType = DataType[step.dataType];
        if (dataType === undefined) throw new Error(`unknown dataType ${step.dataType}`);
        const status = await this.session.write({
            nodeId: await this.nodeId(step.node),
            attributeId: AttributeIds.Value,
            value: { value: { dataType, value: step.value } },
        });
        const name = statusName(status);
        return { status: name, ok: expectOk(step.expect, name) };
    }

    async call(step) {
        const inputArguments = (step.inputs ?? []).map((input) => {
            const dataType = DataType[input.dataType];
            if (dataType === undefined) throw new Error(`unknown dataType ${input.dataType}`);
            // {"array": true}: a one-dimensional array of that type.
            return input.array ? { dataType, arrayType: VariantArrayType.Array, value: input.value }
                : { dataType, value: input.value };
        });
        const objectId = await this.nodeId(step.object);
        const methodId = step.method.path
            ? (await this.translate(step.method.path, step.method.from ?? objectId.toString())).nodeId
            : await this.nodeId(step.method);
        if (!methodId) throw new Error(`method not found: ${JSON.stringify(step.method)}`);
        const result = await this.session.call({ objectId, methodId, inputArguments });
        const status = statusName(result.statusCode);
        return {
            status,
            ok: expectOk(step.expect, status),
            outputs: (result.outputArguments ?? []).map(variantJson),
            inputStatuses: (result.inputArgumentResults ?? []).map(statusName),
        };
    }

    async subscription(step) {
        return ClientSubscription.create(this.session, {
            requestedPublishingInterval: step.publishingInterval ?? 100,
            requestedLifetimeCount: 600,
            requestedMaxKeepAliveCount: 20,
            maxNotificationsPerPublish: 0,
            publishingEnabled: true,
            priority: 1,
        });
    }

    async runAfter(step) {
        const results = [];
        for (const inner of step.after ?? []) results.push(await this.step(inner));
        return results;
    }

    async subscribe(step) {
        const refs = step.nodes ?? [step.node];
        const conditions = (step.until ?? []).map((c) => ({ ...c, met: false }));
        const latest = refs.map(() => undefined);
        const counts = refs.map(() => 0);
        const history = refs.map(() => []);
        const historyLimit = step.history ?? 200;
        let resolveDone;
        const done = new Promise((resolve) => { resolveDone = resolve; });
        // {"every": {"eq" | "gte": v}}: every node's latest value at once (kept incrementally).
        const holds = (test, value) => ("eq" in test
            ? JSON.stringify(value) === JSON.stringify(test.eq) : value >= test.gte);
        for (const c of conditions) if (c.every) c.holding = new Set();
        const check = (changed) => {
            for (const c of conditions) {
                if (c.met) continue;
                if (c.every) {
                    if (holds(c.every, latest[changed].value)) c.holding.add(changed);
                    else c.holding.delete(changed);
                    c.met = c.holding.size === refs.length;
                    continue;
                }
                const index = c.index ?? 0;
                const value = latest[index];
                if (value === undefined) continue;
                if ("changes" in c) c.met = counts[index] - 1 >= c.changes;
                else if ("eq" in c) c.met = JSON.stringify(value.value) === JSON.stringify(c.eq);
                else if ("ne" in c) c.met = JSON.stringify(value.value) !== JSON.stringify(c.ne);
                else if ("gte" in c) c.met = value.value >= c.gte;
                else if ("lte" in c) c.met = value.value <= c.lte;
                else if ("status" in c) c.met = value.status === c.status;
            }
            if (conditions.length > 0 && conditions.every((c) => c.met)) resolveDone();
        };
        const subscription = await this.subscription(step);
        try {
            const itemsToMonitor = [];
            for (const ref of refs) {
                itemsToMonitor.push({ nodeId: await this.nodeId(ref), attributeId: AttributeIds.Value });
            }
            // One CreateMonitoredItems request for all; resolves once the server created them.
            // {"deadband": {"type": "Absolute" | "Percent", "value": v}}: a DataChangeFilter.
            const filter = step.deadband ? new DataChangeFilter({
                trigger: DataChangeTrigger.StatusValue,
                deadbandType: DeadbandType[step.deadband.type],
                deadbandValue: step.deadband.value }) : null;
            const parameters = { samplingInterval: step.samplingInterval ?? 0, discardOldest: true,
                                 queueSize: step.queueSize ?? 100, filter };
            const changed = (_item, dataValue, index) => {
                const value = dataValueJson(dataValue);
                latest[index] = value;
                counts[index] += 1;
                if (history[index].length < historyLimit) history[index].push(value.value);
                if (conditions.length > 0) check(index);
            };
            let triggering = null;
            if (step.trigger !== undefined) {
                // {"trigger": i, "sampled": [j, ...]}: the items j in Sampling mode, linked to
                // item i by SetTriggering (one item per CreateMonitoredItems here).
                const sampled = step.sampled ?? [];
                const items = [];
                for (const [index, item] of itemsToMonitor.entries()) {
                    const mode = sampled.includes(index) ? MonitoringMode.Sampling
                        : MonitoringMode.Reporting;
                    const monitored = ClientMonitoredItem.create(
                        subscription, item, parameters, TimestampsToReturn.Both, mode);
                    await new Promise((resolve, reject) => {
                        monitored.once("initialized", resolve);
                        monitored.once("err", (err) => reject(new Error(String(err))));
                    });
                    monitored.on("changed", (dataValue) => changed(monitored, dataValue, index));
                    items.push(monitored);
                }
                triggering = await new Promise((resolve) => {
                    subscription.setTriggering(items[step.trigger], sampled.map((i) => items[i]),
                                               null, (err, response) => resolve(err && !response
                        ? { error: String(err) }
                        : { status: statusName(response.responseHeader.serviceResult),
                            addResults: (response.addResults ?? []).map(statusName) }));
                });
            } else {
                const group = await subscription.monitorItems(
                    itemsToMonitor, parameters, TimestampsToReturn.Both);
                group.on("changed", changed);
            }
            announce(step, refs.length);
            const started = Date.now();
            const after = await this.runAfter(step);
            const timeout = (step.timeout ?? 10) * 1000;
            let timer;
            const timedOut = new Promise((resolve) => { timer = setTimeout(resolve, timeout); });
            if (conditions.length === 0) await timedOut; else await Promise.race([done, timedOut]);
            clearTimeout(timer);
            return {
                met: conditions.length === 0 ? null : conditions.every((c) => c.met),
                conditions: conditions.map((c) => c.met),
                elapsed: (Date.now() - started) / 1000,
                latest: latest.map((v) => v ?? null),
                counts,
                history,
                after,
                triggering,
            };
        } finally {
            await subscription.terminate();
        }
    }

    async events(step) {
        const fields = step.fields ?? ["EventId", "EventType", "SourceNode", "SourceName", "Time",
                                       "Message", "Severity"];
        const names = [];
        for (const field of fields) {
            const parts = Array.isArray(field) ? field : [field];
            const qualified = [];
            for (const part of parts) {
                const q = await this.qualifiedName(part);
                qualified.push(`${q.namespaceIndex}:${q.name}`);
            }
            names.push(qualified.length === 1 ? qualified[0] : qualified);
        }
        const labels = fields.map((f) => (Array.isArray(f) ? f : [f])
            .map((p) => (typeof p === "string" ? p.slice(p.lastIndexOf("|") + 1) : p.name))
            .join("/"));
        const typeId = step.eventType ? (await this.nodeId(step.eventType)).toString() : null;
        const wanted = step.count ?? 1;
        const collected = [];
        let seen = 0;
        let resolveDone;
        const done = new Promise((resolve) => { resolveDone = resolve; });
        const subscription = await this.subscription(step);
        try {
            const item = await subscription.monitor(
                { nodeId: await this.nodeId(step.node ?? SERVER_OBJECT),
                  attributeId: AttributeIds.EventNotifier },
                { queueSize: 1000, filter: constructEventFilter(names), discardOldest: false },
                TimestampsToReturn.Both,
            );
            announce(step, 1);
            item.on("changed", (variants) => {
                seen += 1;
                const event = {};
                variants.forEach((variant, i) => { event[labels[i]] = variantJson(variant); });
                const type = event.EventType ?? null;
                if (typeId && type !== typeId) return;
                collected.push(event);
                if (collected.length >= wanted) resolveDone();
            });
            const after = await this.runAfter(step);
            let timer;
            const timedOut = new Promise((resolve) => {
                timer = setTimeout(resolve, (step.timeout ?? 10) * 1000);
            });
            await Promise.race([done, timedOut]);
            clearTimeout(timer);
            return { met: collected.length >= wanted, events: collected, seen, after };
        } finally {
            await subscription.terminate();
        }
    }

    async browseAll(nodeIds) {
        const results = [];
        const batch = 100;
        for (let i = 0; i < nodeIds.length; i += batch) {
            const chunk = nodeIds.slice(i, i + batch);
            const answers = await this.session.browse(chunk.map((nodeId) => ({
                nodeId,
                browseDirection: BrowseDirection.Forward,
                referenceTypeId: HIERARCHICAL_REFERENCES,
                includeSubtypes: true,
                nodeClassMask: 0,
                resultMask: makeResultMask("ReferenceType | BrowseName | NodeClass | TypeDefinition"),
            })));
            for (const [j, answer] of answers.entries()) {
                let references = answer.references ?? [];
                let continuationPoint = answer.continuationPoint;
                while (continuationPoint && continuationPoint.length > 0) {
                    const next = await this.session.browseNext(continuationPoint, false);
                    references = references.concat(next.references ?? []);
                    continuationPoint = next.continuationPoint;
                }
                results.push({ nodeId: chunk[j], status: statusName(answer.statusCode), references });
            }
        }
        return results;
    }

    async readAll(nodeIds, attributeId) {
        const values = [];
        const batch = 500;
        for (let i = 0; i < nodeIds.length; i += batch) {
            const chunk = nodeIds.slice(i, i + batch);
            values.push(...await this.session.read(chunk.map((nodeId) => ({ nodeId, attributeId }))));
        }
        return values;
    }

    // Every node reachable from `from` by hierarchical references; every Variable's Value and
    // every DataType's DataTypeDefinition read, with counts per status. DataTypes below
    // Structure (i=22) or Enumeration (i=29) must have a definition; others may lack one.
    async crawl(step) {
        const start = (await this.nodeId(step.from ?? ROOT_FOLDER)).toString();
        const maxNodes = step.maxNodes ?? 200000;
        const nodeClass = new Map([[start, NodeClass.Object]]);
        const browseName = new Map([[start, ""]]);
        const parent = new Map();
        const subtypeParent = new Map();
        let frontier = [start];
        const browseErrors = [];
        while (frontier.length > 0 && nodeClass.size < maxNodes) {
            const answers = await this.browseAll(frontier);
            const next = [];
            for (const answer of answers) {
                if (answer.status !== "Good") {
                    browseErrors.push({ nodeId: answer.nodeId, status: answer.status });
                    continue;
                }
                for (const reference of answer.references) {
                    const id = reference.nodeId.toString();
                    if (reference.referenceTypeId.toString() === "ns=0;i=45" && !subtypeParent.has(id)) {
                        subtypeParent.set(id, answer.nodeId);
                    }
                    if (nodeClass.has(id)) continue;
                    nodeClass.set(id, reference.nodeClass);
                    browseName.set(id, reference.browseName.toString());
                    parent.set(id, answer.nodeId);
                    next.push(id);
                }
            }
            frontier = next;
        }
        const pathOf = (id) => {
            const names = [];
            for (let at = id; at !== undefined && names.length < 30; at = parent.get(at)) {
                names.unshift(browseName.get(at));
            }
            return names.join("/");
        };
        const kindOf = (id) => {
            for (let at = id; at !== undefined; at = subtypeParent.get(at)) {
                if (at === "ns=0;i=22") return "structure";
                if (at === "ns=0;i=29") return "enumeration";
            }
            return "other";
        };
        const variables = [...nodeClass].filter(([, c]) => c === NodeClass.Variable).map(([id]) => id);
        const dataTypes = [...nodeClass].filter(([, c]) => c === NodeClass.DataType).map(([id]) => id);
        const bad = [];
        const values = {};
        for (const [i, dv] of (await this.readAll(variables, AttributeIds.Value)).entries()) {
            const status = statusName(dv.statusCode);
            values[status] = (values[status] ?? 0) + 1;
            if (status !== "Good" && bad.length < 100) {
                bad.push({ nodeId: variables[i], path: pathOf(variables[i]), attribute: "Value", status });
            }
        }
        const definitions = { structure: {}, enumeration: {}, other: {} };
        const definitionsRead = await this.readAll(dataTypes, AttributeIds.DataTypeDefinition);
        for (const [i, dv] of definitionsRead.entries()) {
            const status = statusName(dv.statusCode);
            const kind = kindOf(dataTypes[i]);
            definitions[kind][status] = (definitions[kind][status] ?? 0) + 1;
            if (kind !== "other" && status !== "Good" && bad.length < 100) {
                bad.push({ nodeId: dataTypes[i], path: pathOf(dataTypes[i]),
                           attribute: "DataTypeDefinition", status });
            }
        }
        return {
            nodes: nodeClass.size,
            variables: variables.length,
            dataTypes: dataTypes.length,
            values,
            definitions,
            bad,
            browseErrors: browseErrors.slice(0, 100),
            truncated: nodeClass.size >= maxNodes,
        };
    }

    async namespaces() {
        this.namespaceCache = null;
        return { namespaces: await this.namespaceArray() };
    }

    // FindServers on the connected endpoint: every server it lists, with its URLs.
    async findServers() {
        const servers = await this.client.findServers();
        return { servers: servers.map((s) => ({
            applicationUri: s.applicationUri, applicationType: String(s.applicationType),
            discoveryUrls: s.discoveryUrls ?? [] })) };
    }

    async step(step) {
        const handlers = {
            browse: (s) => this.browse(s),
            read: (s) => this.read(s),
            write: (s) => this.write(s),
            call: (s) => this.call(s),
            subscribe: (s) => this.subscribe(s),
            events: (s) => this.events(s),
            crawl: (s) => this.crawl(s),
            namespaces: () => this.namespaces(),
            findServers: () => this.findServers(),
        };
        const handler = handlers[step.op];
        const result = { op: step.op };
        if (step.name) result.name = step.name;
        if (!handler) return { ...result, error: `unknown op ${step.op}` };
        try {
            return { ...result, ...await handler(step) };
        } catch (error) {
            return { ...result, error: String(error?.message ?? error), status: statusFromError(error) };
        }
    }
}

// The client's PKI (own certificate, trusted servers): a temporary folder, never the home directory.
const pkiRoot = fs.mkdtempSync(path.join(os.tmpdir(), "mes-node-opcua-"));

async function run(plan) {
    const result = { ok: false, connected: false, session: false, steps: [] };
    let client = null;
    let session = null;
    try {
        const certificateManager = new OPCUACertificateManager({
            rootFolder: pkiRoot,
            automaticallyAcceptUnknownCertificate: true,
        });
        await certificateManager.initialize();
        client = OPCUAClient.create({
            applicationName: "mes-node-opcua-test",
            applicationUri: plan.applicationUri ?? "urn:mes:tests:node-opcua",
            clientCertificateManager: certificateManager,
            securityMode: MessageSecurityMode[plan.securityMode ?? "None"],
            securityPolicy: SecurityPolicy[plan.securityPolicy ?? "None"],
            endpointMustExist: false,
            requestedSessionTimeout: 60000,
            defaultSecureTokenLifetime: 600000,
            connectionStrategy: { maxRetry: plan.connectRetries ?? 1, initialDelay: 200, maxDelay: 1000 },
        });
        try {
            await client.connect(plan.endpoint);
        } catch (error) {
            return { ...result, stage: "connect", error: String(error?.message ?? error),
                     status: statusFromError(error) };
        }
        result.connected = true;
        const identity = plan.user
            ? { type: UserTokenType.UserName, userName: plan.user, password: plan.password ?? "" }
            : { type: UserTokenType.Anonymous };
        try {
            session = await client.createSession(identity);
        } catch (error) {
            return { ...result, stage: "session", error: String(error?.message ?? error),
                     status: statusFromError(error) };
        }
        result.session = true;
        const runner = new Runner(plan, session, client);
        for (const step of plan.steps ?? []) {
            const stepResult = await runner.step(step);
            result.steps.push(stepResult);
            if (stepResult.error && !plan.continueOnError) {
                return { ...result, stage: "steps", error: stepResult.error };
            }
        }
        result.ok = true;
        return result;
    } finally {
        if (session) await session.close().catch(() => {});
        if (client) await client.disconnect().catch(() => {});
        fs.rmSync(pkiRoot, { recursive: true, force: true });
    }
}

async function main() {
    let plan;
    try {
        plan = readPlan();
    } catch (error) {
        fs.rmSync(pkiRoot, { recursive: true, force: true });
        finish({ ok: false, stage: "plan", error: String(error?.message ?? error) }, 2);
        return;
    }
    const deadline = (plan.timeout ?? 60) * 1000;
    const timer = setTimeout(() => {
        fs.rmSync(pkiRoot, { recursive: true, force: true });
        finish({ ok: false, stage: "timeout", error: `plan did not finish in ${deadline / 1000} s` }, 3);
    }, deadline);
    let result;
    try {
        result = await run(plan);
    } catch (error) {
        result = { ok: false, stage: "client", error: String(error?.stack ?? error) };
    }
    clearTimeout(timer);
    finish(result, 0);
}

await main();
