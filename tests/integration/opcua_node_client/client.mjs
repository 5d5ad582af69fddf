// An independent OPC UA client (node-opcua) for tests/integration/test_opcua_server.py (against a
// fake command port) and tests/e2e/test_opcua_node_client_live.py (against the live server).
//
// Usage: XDG_CONFIG_HOME=<tmp dir> node client.mjs '<json options>'
//   {endpoint, user, password, namespaceUri, path: [district, asset, tag],
//    subscribe (default true), historyStart, historyEnd (history is read only when given),
//    select: {action, value, reason}, awaitValue (optional), timeoutMs}
// node-opcua keeps its PKI (own certificate, made on first use; the server's, accepted on first
// use) under $XDG_CONFIG_HOME/node-opcua-default-nodejs/PKI: point it at a temporary folder.
// Connects with Basic256Sha256 SignAndEncrypt and a user name, browses Objects/GasNetwork/path,
// reads the tag with its EngineeringUnits and EURange (where the tag has them), subscribes and
// waits for two changes, reads its raw history, calls Select and then Operate on the asset, with
// awaitValue reads the tag again until it holds that value (or timeoutMs passes; "after" is the
// last value read), and prints one JSON summary on stdout, on a line starting with "SUMMARY "
// (node-opcua logs to stdout too).
import {
    AttributeIds,
    ClientMonitoredItem,
    DataType,
    MessageSecurityMode,
    OPCUAClient,
    SecurityPolicy,
    TimestampsToReturn,
    UserTokenType,
} from "node-opcua-client";

const opts = JSON.parse(process.argv[2]);
const timeoutMs = opts.timeoutMs ?? 15000;

function withTimeout(promise, what) {
    let timer;
    const limit = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), timeoutMs);
    });
    return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function optionalChild(session, nodeId, name) {
    const result = await session.browse({
        nodeId,
        referenceTypeId: "HierarchicalReferences",
        includeSubtypes: true,
        browseDirection: 0, // Forward
        resultMask: 63,
    });
    const ref = result.references.find((r) => r.browseName.name === name);
    return ref ? ref.nodeId : null;
}

async function child(session, nodeId, name) {
    const found = await optionalChild(session, nodeId, name);
    if (!found) {
        throw new Error(`no child ${name} under ${nodeId.toString()}`);
    }
    return found;
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

async function twoChanges(session, node) {
    const subscription = await session.createSubscription2({
        requestedPublishingInterval: 100, requestedLifetimeCount: 600,
        requestedMaxKeepAliveCount: 20, maxNotificationsPerPublish: 100,
        publishingEnabled: true, priority: 1,
    });
    const item = ClientMonitoredItem.create(subscription,
        { nodeId: node, attributeId: AttributeIds.Value },
        { samplingInterval: 0, queueSize: 10, discardOldest: true }, TimestampsToReturn.Both);
    const seen = [];
    await withTimeout(new Promise((resolve) => {
        item.on("changed", (value) => {
            seen.push(value.value.value);
            if (seen.length >= 2) {
                resolve();
            }
        });
    }), "a data change");
    await subscription.terminate();
    return seen;
}

async function rawHistory(session, node) {
    const history = await session.readHistoryValue({ nodeId: node },
        new Date(opts.historyStart), new Date(opts.historyEnd));
    return {
        status: history.statusCode.name,
        values: (history.historyData?.dataValues ?? []).map((v) => ({
            value: v.value.value, status: v.statusCode.name, ts: v.sourceTimestamp.toISOString(),
        })),
    };
}

// Select, and when the server selected the command, Operate it with the command id it returned.
async function selectAndOperate(session, asset) {
    const result = {};
    const call = await session.call({
        objectId: asset,
        methodId: await child(session, asset, "Select"),
        inputArguments: [
            { dataType: DataType.String, value: opts.select.action },
            { dataType: DataType.Double, value: opts.select.value },
            { dataType: DataType.String, value: opts.select.reason },
        ],
    });
    result.select = {
        status: call.statusCode.name,
        output: call.outputArguments.map((a) => a.value),
    };
    if (call.statusCode.name === "Good") {  // select-before-operate: now Operate it
        const commandId = JSON.parse(call.outputArguments[0].value).command_id;
        const started = Date.now();
        const operate = await session.call({
            objectId: asset,
            methodId: await child(session, asset, "Operate"),
            inputArguments: [{ dataType: DataType.String, value: commandId }],
        });
        result.operate = {
            status: operate.statusCode.name,
            output: operate.outputArguments.map((a) => a.value),
            ms: Date.now() - started,
        };
    }
    return result;
}

// Read the tag until it holds `want` or timeoutMs passes; the last value read.
async function readUntil(session, node, want) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = (await session.read({ nodeId: node, attributeId: AttributeIds.Value })).value.value;
        if (value === want || Date.now() > deadline) {
            return value;
        }
        await sleep(100);
    }
}

async function main() {
    const client = OPCUAClient.create({
        applicationName: "gasops-node-test-client",
        securityMode: MessageSecurityMode.SignAndEncrypt,
        securityPolicy: SecurityPolicy.Basic256Sha256,
        endpointMustExist: true,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        requestedSessionTimeout: 60000,
    });
    const summary = { user: opts.user };
    await withTimeout(client.connect(opts.endpoint), "connect");
    try {
        const session = await withTimeout(client.createSession({
            type: UserTokenType.UserName, userName: opts.user, password: opts.password,
        }), "session");
        try {
            summary.security = { mode: MessageSecurityMode[client.securityMode], policy: client.securityPolicy };
            const namespaces = (await session.read({ nodeId: "ns=0;i=2255", attributeId: AttributeIds.Value }))
                .value.value;
            const ns = namespaces.indexOf(opts.namespaceUri);
            summary.namespaceIndex = ns;

            let node = await child(session, "ns=0;i=85", "GasNetwork");
            const browsed = ["GasNetwork"];
            let asset = null;
            for (const [i, name] of opts.path.entries()) {
                node = await child(session, node, name);
                browsed.push(name);
                if (i === opts.path.length - 2) {
                    asset = node;
                }
            }
            summary.browsed = browsed;
            summary.nodeId = node.toString();

            const dv = await session.read({ nodeId: node, attributeId: AttributeIds.Value });
            summary.value = dv.value.value;
            summary.dataType = DataType[dv.value.dataType];
            summary.status = dv.statusCode.name;
            const euNode = await optionalChild(session, node, "EngineeringUnits");
            if (euNode) {
                const units = (await session.read({ nodeId: euNode, attributeId: AttributeIds.Value })).value.value;
                summary.engineeringUnits = {
                    displayName: units.displayName.text, unitId: units.unitId, namespaceUri: units.namespaceUri,
                };
            }
            const rangeNode = await optionalChild(session, node, "EURange");
            if (rangeNode) {
                const range = (await session.read({ nodeId: rangeNode, attributeId: AttributeIds.Value })).value.value;
                summary.euRange = { low: range.low, high: range.high };
            }

            if (opts.subscribe !== false) {
                summary.changes = await twoChanges(session, node);
            }
            if (opts.historyStart !== undefined) {
                summary.history = await rawHistory(session, node);
            }
            Object.assign(summary, await selectAndOperate(session, asset));
            if (opts.awaitValue !== undefined) {
                summary.after = await readUntil(session, node, opts.awaitValue);
            }
        } finally {
            await session.close();
        }
    } finally {
        await client.disconnect();
    }
    process.stdout.write("SUMMARY " + JSON.stringify(summary) + "\n");
}

main().catch((err) => {
    process.stdout.write("SUMMARY " + JSON.stringify({ error: String(err?.message ?? err) }) + "\n");
    process.exit(1);
});
