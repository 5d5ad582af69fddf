// An independent OPC UA client (node-opcua) for tests/integration/test_opcua_server.py.
//
// Usage: XDG_CONFIG_HOME=<tmp dir> node client.mjs '<json options>'
//   {endpoint, user, password, namespaceUri, path: [district, asset, tag],
//    historyStart, historyEnd, select: {action, value, reason}, timeoutMs}
// node-opcua keeps its PKI (own certificate, made on first use; the server's, accepted on first
// use) under $XDG_CONFIG_HOME/node-opcua-default-nodejs/PKI: point it at a temporary folder.
// Connects with Basic256Sha256 SignAndEncrypt and a user name, browses Objects/GasNetwork/path,
// reads the tag with its EngineeringUnits and EURange, subscribes and waits for one change, reads
// its raw history, calls Select and then Operate on the asset, and prints one JSON summary on stdout, on a line
// starting with "SUMMARY " (node-opcua logs to stdout too).
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

async function child(session, nodeId, name) {
    const result = await session.browse({
        nodeId,
        referenceTypeId: "HierarchicalReferences",
        includeSubtypes: true,
        browseDirection: 0, // Forward
        resultMask: 63,
    });
    const ref = result.references.find((r) => r.browseName.name === name);
    if (!ref) {
        throw new Error(`no child ${name} under ${nodeId.toString()}`);
    }
    return ref.nodeId;
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
            const eu = await session.read({ nodeId: await child(session, node, "EngineeringUnits"),
                attributeId: AttributeIds.Value });
            const units = eu.value.value;
            summary.engineeringUnits = {
                displayName: units.displayName.text, unitId: units.unitId, namespaceUri: units.namespaceUri,
            };
            const range = await session.read({ nodeId: await child(session, node, "EURange"),
                attributeId: AttributeIds.Value });
            summary.euRange = { low: range.value.value.low, high: range.value.value.high };

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
            summary.changes = seen;
            await subscription.terminate();

            const history = await session.readHistoryValue({ nodeId: node },
                new Date(opts.historyStart), new Date(opts.historyEnd));
            summary.history = {
                status: history.statusCode.name,
                values: (history.historyData?.dataValues ?? []).map((v) => ({
                    value: v.value.value, status: v.statusCode.name, ts: v.sourceTimestamp.toISOString(),
                })),
            };

            const method = await child(session, asset, "Select");
            const call = await session.call({
                objectId: asset,
                methodId: method,
                inputArguments: [
                    { dataType: DataType.String, value: opts.select.action },
                    { dataType: DataType.Double, value: opts.select.value },
                    { dataType: DataType.String, value: opts.select.reason },
                ],
            });
            summary.select = {
                status: call.statusCode.name,
                output: call.outputArguments.map((a) => a.value),
            };
            if (call.statusCode.name === "Good") {  // select-before-operate: now Operate it
                const commandId = JSON.parse(call.outputArguments[0].value).command_id;
                const operate = await session.call({
                    objectId: asset,
                    methodId: await child(session, asset, "Operate"),
                    inputArguments: [{ dataType: DataType.String, value: commandId }],
                });
                summary.operate = {
                    status: operate.statusCode.name,
                    output: operate.outputArguments.map((a) => a.value),
                };
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
