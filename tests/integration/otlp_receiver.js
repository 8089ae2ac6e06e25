// A real OTLP/HTTP receiver for the tracing test: npm's @elastic/mockotlpserver on a free
// loopback port. Each trace export it receives is written as one JSON line (the request
// body as received, OTLP/JSON) to the file in argv[2]; the URL is printed on stdout.
'use strict';
const fs = require('fs');
const {MockOtlpServer} = require('@elastic/mockotlpserver');

const out = process.argv[2];
const server = new MockOtlpServer({
  logLevel: 'warn',
  services: ['http'],
  httpHostname: '127.0.0.1',
  httpPort: 0,
  onTrace: (trace) => fs.appendFileSync(out, JSON.stringify(trace) + '\n'),
});
server.start().then(() => {
  console.log(String(server.httpUrl.href || server.httpUrl));
});
process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
