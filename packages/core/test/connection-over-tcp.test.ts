/** The ConnectionManager suite (connection.test.ts) with every device on the 'tcp' transport policy. */
process.env.DHTNET_TEST_TRANSPORT = 'tcp'
await import('./connection.test.js')
