export { PortMapper, defaultGatewayIpv4, type PortMapping, type PortMapperOptions, type MappedProtocol } from './port-mapper.js'
export { natPmpExternalAddress, natPmpMapUdp, natPmpMapTcp, NATPMP_PORT, type NatPmpMapResult } from './natpmp.js'
export { addMappedCandidate, freeUdpPort, srflxPriority, tcpMappedCandidate } from './mapped-candidate.js'
