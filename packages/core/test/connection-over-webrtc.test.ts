/** The ConnectionManager suite (connection.test.ts) with every device on the 'webrtc' transport policy. */
process.env.DHTNET_TEST_TRANSPORT = 'webrtc'
await import('./connection.test.js')
