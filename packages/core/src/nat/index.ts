export { PortMapper, defaultGatewayIpv4, type PortMapping, type PortMapperOptions } from './port-mapper.js'
export { natPmpExternalAddress, natPmpMapUdp, NATPMP_PORT, type NatPmpMapResult } from './natpmp.js'
export { addMappedCandidate, freeUdpPort, srflxPriority } from './mapped-candidate.js'
