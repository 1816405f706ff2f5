"""IPFIX information elements: id -> (IANA name, abstract data type).

The table below was generated from the IANA "IPFIX Information Elements" registry
(https://www.iana.org/assignments/ipfix/ipfix.xhtml), ids 1-512. Decoded records use these names
as keys everywhere (design section 4), so the v9 and v5 decoders name their fields the same way:
NetFlow v9 field types 1-127 share the IPFIX numbering (RFC 3954 / RFC 5102), and exporters
reuse IPFIX ids above 127 in v9 too. Vendor v9 types (Cisco ASA NSEL) have their own table;
anything unknown gets a stable synthetic name (``v9Field56701``, ``ipfixField999``,
``e5951f123``) and is rendered as hex.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from typing import Any, Final

# Abstract data types (RFC 7012 section 3.1); short aliases keep the table readable.
U8, U16, U32, U64 = "unsigned8", "unsigned16", "unsigned32", "unsigned64"
S32 = "signed32"
F64 = "float64"
BOOL = "boolean"
MAC = "macAddress"
OCT = "octetArray"
STR = "string"
SEC, MSEC, USEC, NSEC = (
    "dateTimeSeconds",
    "dateTimeMilliseconds",
    "dateTimeMicroseconds",
    "dateTimeNanoseconds",
)
IP4, IP6 = "ipv4Address", "ipv6Address"
BLIST, STL, STML = "basicList", "subTemplateList", "subTemplateMultiList"

INTEGER_TYPES: Final = frozenset({U8, U16, U32, U64, "signed8", "signed16", S32, "signed64", SEC, MSEC, USEC, NSEC})
SIGNED_TYPES: Final = frozenset({"signed8", "signed16", S32, "signed64"})

# fmt: off
IANA: Final[dict[int, tuple[str, str]]] = {
    1: ("octetDeltaCount", U64), 2: ("packetDeltaCount", U64), 3: ("deltaFlowCount", U64),
    4: ("protocolIdentifier", U8), 5: ("ipClassOfService", U8), 6: ("tcpControlBits", U16),
    7: ("sourceTransportPort", U16), 8: ("sourceIPv4Address", IP4), 9: ("sourceIPv4PrefixLength", U8),
    10: ("ingressInterface", U32), 11: ("destinationTransportPort", U16),
    12: ("destinationIPv4Address", IP4), 13: ("destinationIPv4PrefixLength", U8),
    14: ("egressInterface", U32), 15: ("ipNextHopIPv4Address", IP4), 16: ("bgpSourceAsNumber", U32),
    17: ("bgpDestinationAsNumber", U32), 18: ("bgpNextHopIPv4Address", IP4),
    19: ("postMCastPacketDeltaCount", U64), 20: ("postMCastOctetDeltaCount", U64),
    21: ("flowEndSysUpTime", U32), 22: ("flowStartSysUpTime", U32), 23: ("postOctetDeltaCount", U64),
    24: ("postPacketDeltaCount", U64), 25: ("minimumIpTotalLength", U64),
    26: ("maximumIpTotalLength", U64), 27: ("sourceIPv6Address", IP6),
    28: ("destinationIPv6Address", IP6), 29: ("sourceIPv6PrefixLength", U8),
    30: ("destinationIPv6PrefixLength", U8), 31: ("flowLabelIPv6", U32), 32: ("icmpTypeCodeIPv4", U16),
    33: ("igmpType", U8), 34: ("samplingInterval", U32), 35: ("samplingAlgorithm", U8),
    36: ("flowActiveTimeout", U16), 37: ("flowIdleTimeout", U16), 38: ("engineType", U8),
    39: ("engineId", U8), 40: ("exportedOctetTotalCount", U64), 41: ("exportedMessageTotalCount", U64),
    42: ("exportedFlowRecordTotalCount", U64), 43: ("ipv4RouterSc", IP4), 44: ("sourceIPv4Prefix", IP4),
    45: ("destinationIPv4Prefix", IP4), 46: ("mplsTopLabelType", U8),
    47: ("mplsTopLabelIPv4Address", IP4), 48: ("samplerId", U8), 49: ("samplerMode", U8),
    50: ("samplerRandomInterval", U32), 51: ("classId", U8), 52: ("minimumTTL", U8),
    53: ("maximumTTL", U8), 54: ("fragmentIdentification", U32), 55: ("postIpClassOfService", U8),
    56: ("sourceMacAddress", MAC), 57: ("postDestinationMacAddress", MAC), 58: ("vlanId", U16),
    59: ("postVlanId", U16), 60: ("ipVersion", U8), 61: ("flowDirection", U8),
    62: ("ipNextHopIPv6Address", IP6), 63: ("bgpNextHopIPv6Address", IP6),
    64: ("ipv6ExtensionHeaders", U32), 70: ("mplsTopLabelStackSection", OCT),
    71: ("mplsLabelStackSection2", OCT), 72: ("mplsLabelStackSection3", OCT),
    73: ("mplsLabelStackSection4", OCT), 74: ("mplsLabelStackSection5", OCT),
    75: ("mplsLabelStackSection6", OCT), 76: ("mplsLabelStackSection7", OCT),
    77: ("mplsLabelStackSection8", OCT), 78: ("mplsLabelStackSection9", OCT),
    79: ("mplsLabelStackSection10", OCT), 80: ("destinationMacAddress", MAC),
    81: ("postSourceMacAddress", MAC), 82: ("interfaceName", STR), 83: ("interfaceDescription", STR),
    84: ("samplerName", STR), 85: ("octetTotalCount", U64), 86: ("packetTotalCount", U64),
    87: ("flagsAndSamplerId", U32), 88: ("fragmentOffset", U16), 89: ("forwardingStatus", U8),
    90: ("mplsVpnRouteDistinguisher", OCT), 91: ("mplsTopLabelPrefixLength", U8),
    92: ("srcTrafficIndex", U32), 93: ("dstTrafficIndex", U32), 94: ("applicationDescription", STR),
    95: ("applicationId", OCT), 96: ("applicationName", STR), 98: ("postIpDiffServCodePoint", U8),
    99: ("multicastReplicationFactor", U32), 100: ("className", STR),
    101: ("classificationEngineId", U8), 102: ("layer2packetSectionOffset", U16),
    103: ("layer2packetSectionSize", U16), 104: ("layer2packetSectionData", OCT),
    128: ("bgpNextAdjacentAsNumber", U32), 129: ("bgpPrevAdjacentAsNumber", U32),
    130: ("exporterIPv4Address", IP4), 131: ("exporterIPv6Address", IP6),
    132: ("droppedOctetDeltaCount", U64), 133: ("droppedPacketDeltaCount", U64),
    134: ("droppedOctetTotalCount", U64), 135: ("droppedPacketTotalCount", U64),
    136: ("flowEndReason", U8), 137: ("commonPropertiesId", U64), 138: ("observationPointId", U64),
    139: ("icmpTypeCodeIPv6", U16), 140: ("mplsTopLabelIPv6Address", IP6), 141: ("lineCardId", U32),
    142: ("portId", U32), 143: ("meteringProcessId", U32), 144: ("exportingProcessId", U32),
    145: ("templateId", U16), 146: ("wlanChannelId", U8), 147: ("wlanSSID", STR), 148: ("flowId", U64),
    149: ("observationDomainId", U32), 150: ("flowStartSeconds", SEC), 151: ("flowEndSeconds", SEC),
    152: ("flowStartMilliseconds", MSEC), 153: ("flowEndMilliseconds", MSEC),
    154: ("flowStartMicroseconds", USEC), 155: ("flowEndMicroseconds", USEC),
    156: ("flowStartNanoseconds", NSEC), 157: ("flowEndNanoseconds", NSEC),
    158: ("flowStartDeltaMicroseconds", U32), 159: ("flowEndDeltaMicroseconds", U32),
    160: ("systemInitTimeMilliseconds", MSEC), 161: ("flowDurationMilliseconds", U32),
    162: ("flowDurationMicroseconds", U32), 163: ("observedFlowTotalCount", U64),
    164: ("ignoredPacketTotalCount", U64), 165: ("ignoredOctetTotalCount", U64),
    166: ("notSentFlowTotalCount", U64), 167: ("notSentPacketTotalCount", U64),
    168: ("notSentOctetTotalCount", U64), 169: ("destinationIPv6Prefix", IP6),
    170: ("sourceIPv6Prefix", IP6), 171: ("postOctetTotalCount", U64),
    172: ("postPacketTotalCount", U64), 173: ("flowKeyIndicator", U64),
    174: ("postMCastPacketTotalCount", U64), 175: ("postMCastOctetTotalCount", U64),
    176: ("icmpTypeIPv4", U8), 177: ("icmpCodeIPv4", U8), 178: ("icmpTypeIPv6", U8),
    179: ("icmpCodeIPv6", U8), 180: ("udpSourcePort", U16), 181: ("udpDestinationPort", U16),
    182: ("tcpSourcePort", U16), 183: ("tcpDestinationPort", U16), 184: ("tcpSequenceNumber", U32),
    185: ("tcpAcknowledgementNumber", U32), 186: ("tcpWindowSize", U16),
    187: ("tcpUrgentPointer", U16), 188: ("tcpHeaderLength", U8), 189: ("ipHeaderLength", U8),
    190: ("totalLengthIPv4", U16), 191: ("payloadLengthIPv6", U16), 192: ("ipTTL", U8),
    193: ("nextHeaderIPv6", U8), 194: ("mplsPayloadLength", U32), 195: ("ipDiffServCodePoint", U8),
    196: ("ipPrecedence", U8), 197: ("fragmentFlags", U8), 198: ("octetDeltaSumOfSquares", U64),
    199: ("octetTotalSumOfSquares", U64), 200: ("mplsTopLabelTTL", U8),
    201: ("mplsLabelStackLength", U32), 202: ("mplsLabelStackDepth", U32),
    203: ("mplsTopLabelExp", U8), 204: ("ipPayloadLength", U32), 205: ("udpMessageLength", U16),
    206: ("isMulticast", U8), 207: ("ipv4IHL", U8), 208: ("ipv4Options", U32), 209: ("tcpOptions", U64),
    210: ("paddingOctets", OCT), 211: ("collectorIPv4Address", IP4), 212: ("collectorIPv6Address", IP6),
    213: ("exportInterface", U32), 214: ("exportProtocolVersion", U8),
    215: ("exportTransportProtocol", U8), 216: ("collectorTransportPort", U16),
    217: ("exporterTransportPort", U16), 218: ("tcpSynTotalCount", U64), 219: ("tcpFinTotalCount", U64),
    220: ("tcpRstTotalCount", U64), 221: ("tcpPshTotalCount", U64), 222: ("tcpAckTotalCount", U64),
    223: ("tcpUrgTotalCount", U64), 224: ("ipTotalLength", U64), 225: ("postNATSourceIPv4Address", IP4),
    226: ("postNATDestinationIPv4Address", IP4), 227: ("postNAPTSourceTransportPort", U16),
    228: ("postNAPTDestinationTransportPort", U16), 229: ("natOriginatingAddressRealm", U8),
    230: ("natEvent", U8), 231: ("initiatorOctets", U64), 232: ("responderOctets", U64),
    233: ("firewallEvent", U8), 234: ("ingressVRFID", U32), 235: ("egressVRFID", U32),
    236: ("VRFname", STR), 237: ("postMplsTopLabelExp", U8), 238: ("tcpWindowScale", U16),
    239: ("biflowDirection", U8), 240: ("ethernetHeaderLength", U8), 241: ("ethernetPayloadLength", U16),
    242: ("ethernetTotalLength", U16), 243: ("dot1qVlanId", U16), 244: ("dot1qPriority", U8),
    245: ("dot1qCustomerVlanId", U16), 246: ("dot1qCustomerPriority", U8), 247: ("metroEvcId", STR),
    248: ("metroEvcType", U8), 249: ("pseudoWireId", U32), 250: ("pseudoWireType", U16),
    251: ("pseudoWireControlWord", U32), 252: ("ingressPhysicalInterface", U32),
    253: ("egressPhysicalInterface", U32), 254: ("postDot1qVlanId", U16),
    255: ("postDot1qCustomerVlanId", U16), 256: ("ethernetType", U16), 257: ("postIpPrecedence", U8),
    258: ("collectionTimeMilliseconds", MSEC), 259: ("exportSctpStreamId", U16),
    260: ("maxExportSeconds", SEC), 261: ("maxFlowEndSeconds", SEC), 262: ("messageMD5Checksum", OCT),
    263: ("messageScope", U8), 264: ("minExportSeconds", SEC), 265: ("minFlowStartSeconds", SEC),
    266: ("opaqueOctets", OCT), 267: ("sessionScope", U8), 268: ("maxFlowEndMicroseconds", USEC),
    269: ("maxFlowEndMilliseconds", MSEC), 270: ("maxFlowEndNanoseconds", NSEC),
    271: ("minFlowStartMicroseconds", USEC), 272: ("minFlowStartMilliseconds", MSEC),
    273: ("minFlowStartNanoseconds", NSEC), 274: ("collectorCertificate", OCT),
    275: ("exporterCertificate", OCT), 276: ("dataRecordsReliability", BOOL),
    277: ("observationPointType", U8), 278: ("newConnectionDeltaCount", U32),
    279: ("connectionSumDurationSeconds", U64), 280: ("connectionTransactionId", U64),
    281: ("postNATSourceIPv6Address", IP6), 282: ("postNATDestinationIPv6Address", IP6),
    283: ("natPoolId", U32), 284: ("natPoolName", STR), 285: ("anonymizationFlags", U16),
    286: ("anonymizationTechnique", U16), 287: ("informationElementIndex", U16),
    288: ("p2pTechnology", STR), 289: ("tunnelTechnology", STR), 290: ("encryptedTechnology", STR),
    291: ("basicList", BLIST), 292: ("subTemplateList", STL), 293: ("subTemplateMultiList", STML),
    294: ("bgpValidityState", U8), 295: ("IPSecSPI", U32), 296: ("greKey", U32), 297: ("natType", U8),
    298: ("initiatorPackets", U64), 299: ("responderPackets", U64), 300: ("observationDomainName", STR),
    301: ("selectionSequenceId", U64), 302: ("selectorId", U64), 303: ("informationElementId", U16),
    304: ("selectorAlgorithm", U16), 305: ("samplingPacketInterval", U32),
    306: ("samplingPacketSpace", U32), 307: ("samplingTimeInterval", U32),
    308: ("samplingTimeSpace", U32), 309: ("samplingSize", U32), 310: ("samplingPopulation", U32),
    311: ("samplingProbability", F64), 312: ("dataLinkFrameSize", U16),
    313: ("ipHeaderPacketSection", OCT), 314: ("ipPayloadPacketSection", OCT),
    315: ("dataLinkFrameSection", OCT), 316: ("mplsLabelStackSection", OCT),
    317: ("mplsPayloadPacketSection", OCT), 318: ("selectorIdTotalPktsObserved", U64),
    319: ("selectorIdTotalPktsSelected", U64), 320: ("absoluteError", F64), 321: ("relativeError", F64),
    322: ("observationTimeSeconds", SEC), 323: ("observationTimeMilliseconds", MSEC),
    324: ("observationTimeMicroseconds", USEC), 325: ("observationTimeNanoseconds", NSEC),
    326: ("digestHashValue", U64), 327: ("hashIPPayloadOffset", U64), 328: ("hashIPPayloadSize", U64),
    329: ("hashOutputRangeMin", U64), 330: ("hashOutputRangeMax", U64),
    331: ("hashSelectedRangeMin", U64), 332: ("hashSelectedRangeMax", U64),
    333: ("hashDigestOutput", BOOL), 334: ("hashInitialiserValue", U64), 335: ("selectorName", STR),
    336: ("upperCILimit", F64), 337: ("lowerCILimit", F64), 338: ("confidenceLevel", F64),
    339: ("informationElementDataType", U8), 340: ("informationElementDescription", STR),
    341: ("informationElementName", STR), 342: ("informationElementRangeBegin", U64),
    343: ("informationElementRangeEnd", U64), 344: ("informationElementSemantics", U8),
    345: ("informationElementUnits", U16), 346: ("privateEnterpriseNumber", U32),
    347: ("virtualStationInterfaceId", OCT), 348: ("virtualStationInterfaceName", STR),
    349: ("virtualStationUUID", OCT), 350: ("virtualStationName", STR), 351: ("layer2SegmentId", U64),
    352: ("layer2OctetDeltaCount", U64), 353: ("layer2OctetTotalCount", U64),
    354: ("ingressUnicastPacketTotalCount", U64), 355: ("ingressMulticastPacketTotalCount", U64),
    356: ("ingressBroadcastPacketTotalCount", U64), 357: ("egressUnicastPacketTotalCount", U64),
    358: ("egressBroadcastPacketTotalCount", U64), 359: ("monitoringIntervalStartMilliSeconds", MSEC),
    360: ("monitoringIntervalEndMilliSeconds", MSEC), 361: ("portRangeStart", U16),
    362: ("portRangeEnd", U16), 363: ("portRangeStepSize", U16), 364: ("portRangeNumPorts", U16),
    365: ("staMacAddress", MAC), 366: ("staIPv4Address", IP4), 367: ("wtpMacAddress", MAC),
    368: ("ingressInterfaceType", U32), 369: ("egressInterfaceType", U32),
    370: ("rtpSequenceNumber", U16), 371: ("userName", STR), 372: ("applicationCategoryName", STR),
    373: ("applicationSubCategoryName", STR), 374: ("applicationGroupName", STR),
    375: ("originalFlowsPresent", U64), 376: ("originalFlowsInitiated", U64),
    377: ("originalFlowsCompleted", U64), 378: ("distinctCountOfSourceIPAddress", U64),
    379: ("distinctCountOfDestinationIPAddress", U64), 380: ("distinctCountOfSourceIPv4Address", U32),
    381: ("distinctCountOfDestinationIPv4Address", U32),
    382: ("distinctCountOfSourceIPv6Address", U64),
    383: ("distinctCountOfDestinationIPv6Address", U64), 384: ("valueDistributionMethod", U8),
    385: ("rfc3550JitterMilliseconds", U32), 386: ("rfc3550JitterMicroseconds", U32),
    387: ("rfc3550JitterNanoseconds", U32), 388: ("dot1qDEI", BOOL), 389: ("dot1qCustomerDEI", BOOL),
    390: ("flowSelectorAlgorithm", U16), 391: ("flowSelectedOctetDeltaCount", U64),
    392: ("flowSelectedPacketDeltaCount", U64), 393: ("flowSelectedFlowDeltaCount", U64),
    394: ("selectorIDTotalFlowsObserved", U64), 395: ("selectorIDTotalFlowsSelected", U64),
    396: ("samplingFlowInterval", U64), 397: ("samplingFlowSpacing", U64),
    398: ("flowSamplingTimeInterval", U64), 399: ("flowSamplingTimeSpacing", U64),
    400: ("hashFlowDomain", U16), 401: ("transportOctetDeltaCount", U64),
    402: ("transportPacketDeltaCount", U64), 403: ("originalExporterIPv4Address", IP4),
    404: ("originalExporterIPv6Address", IP6), 405: ("originalObservationDomainId", U32),
    406: ("intermediateProcessId", U32), 407: ("ignoredDataRecordTotalCount", U64),
    408: ("dataLinkFrameType", U16), 409: ("sectionOffset", U16), 410: ("sectionExportedOctets", U16),
    411: ("dot1qServiceInstanceTag", OCT), 412: ("dot1qServiceInstanceId", U32),
    413: ("dot1qServiceInstancePriority", U8), 414: ("dot1qCustomerSourceMacAddress", MAC),
    415: ("dot1qCustomerDestinationMacAddress", MAC), 417: ("postLayer2OctetDeltaCount", U64),
    418: ("postMCastLayer2OctetDeltaCount", U64), 420: ("postLayer2OctetTotalCount", U64),
    421: ("postMCastLayer2OctetTotalCount", U64), 422: ("minimumLayer2TotalLength", U64),
    423: ("maximumLayer2TotalLength", U64), 424: ("droppedLayer2OctetDeltaCount", U64),
    425: ("droppedLayer2OctetTotalCount", U64), 426: ("ignoredLayer2OctetTotalCount", U64),
    427: ("notSentLayer2OctetTotalCount", U64), 428: ("layer2OctetDeltaSumOfSquares", U64),
    429: ("layer2OctetTotalSumOfSquares", U64), 430: ("layer2FrameDeltaCount", U64),
    431: ("layer2FrameTotalCount", U64), 432: ("pseudoWireDestinationIPv4Address", IP4),
    433: ("ignoredLayer2FrameTotalCount", U64), 434: ("mibObjectValueInteger", S32),
    435: ("mibObjectValueOctetString", OCT), 436: ("mibObjectValueOID", OCT),
    437: ("mibObjectValueBits", OCT), 438: ("mibObjectValueIPAddress", IP4),
    439: ("mibObjectValueCounter", U64), 440: ("mibObjectValueGauge", U32),
    441: ("mibObjectValueTimeTicks", U32), 442: ("mibObjectValueUnsigned", U32),
    443: ("mibObjectValueTable", STL), 444: ("mibObjectValueRow", STL),
    445: ("mibObjectIdentifier", OCT), 446: ("mibSubIdentifier", U32), 447: ("mibIndexIndicator", U64),
    448: ("mibCaptureTimeSemantics", U8), 449: ("mibContextEngineID", OCT), 450: ("mibContextName", STR),
    451: ("mibObjectName", STR), 452: ("mibObjectDescription", STR), 453: ("mibObjectSyntax", STR),
    454: ("mibModuleName", STR), 455: ("mobileIMSI", STR), 456: ("mobileMSISDN", STR),
    457: ("httpStatusCode", U16), 458: ("sourceTransportPortsLimit", U16),
    459: ("httpRequestMethod", STR), 460: ("httpRequestHost", STR), 461: ("httpRequestTarget", STR),
    462: ("httpMessageVersion", STR), 463: ("natInstanceID", U32), 464: ("internalAddressRealm", OCT),
    465: ("externalAddressRealm", OCT), 466: ("natQuotaExceededEvent", U32),
    467: ("natThresholdEvent", U32), 468: ("httpUserAgent", STR), 469: ("httpContentType", STR),
    470: ("httpReasonPhrase", STR), 471: ("maxSessionEntries", U32), 472: ("maxBIBEntries", U32),
    473: ("maxEntriesPerUser", U32), 474: ("maxSubscribers", U32),
    475: ("maxFragmentsPendingReassembly", U32), 476: ("addressPoolHighThreshold", U32),
    477: ("addressPoolLowThreshold", U32), 478: ("addressPortMappingHighThreshold", U32),
    479: ("addressPortMappingLowThreshold", U32), 480: ("addressPortMappingPerUserHighThreshold", U32),
    481: ("globalAddressMappingHighThreshold", U32), 482: ("vpnIdentifier", OCT),
    483: ("bgpCommunity", U32), 484: ("bgpSourceCommunityList", BLIST),
    485: ("bgpDestinationCommunityList", BLIST), 486: ("bgpExtendedCommunity", OCT),
    487: ("bgpSourceExtendedCommunityList", BLIST), 488: ("bgpDestinationExtendedCommunityList", BLIST),
    489: ("bgpLargeCommunity", OCT), 490: ("bgpSourceLargeCommunityList", BLIST),
    491: ("bgpDestinationLargeCommunityList", BLIST), 492: ("srhFlagsIPv6", U8),
    493: ("srhTagIPv6", U16), 494: ("srhSegmentIPv6", IP6), 495: ("srhActiveSegmentIPv6", IP6),
    496: ("srhSegmentIPv6BasicList", BLIST), 497: ("srhSegmentIPv6ListSection", OCT),
    498: ("srhSegmentsIPv6Left", U8), 499: ("srhIPv6Section", OCT), 500: ("srhIPv6ActiveSegmentType", U8),
    501: ("srhSegmentIPv6LocatorLength", U8), 502: ("srhSegmentIPv6EndpointBehavior", U16),
    503: ("transportChecksum", U16), 504: ("icmpHeaderPacketSection", OCT), 505: ("gtpuFlags", U8),
    506: ("gtpuMsgType", U8), 507: ("gtpuTEid", U32), 508: ("gtpuSequenceNum", U16), 509: ("gtpuQFI", U8),
    510: ("gtpuPduType", U8), 511: ("bgpSourceAsPathList", BLIST), 512: ("bgpDestinationAsPathList", BLIST),
}

# RFC 3954 section 8 names of the v9 field types (same ids as IPFIX): kept so templates can be shown
# with the names Cisco documentation uses, and so ``ie_id("FLOW_SAMPLER_ID")`` works.
V9_RFC3954_NAMES: Final[dict[int, str]] = {
    1: "IN_BYTES", 2: "IN_PKTS", 3: "FLOWS", 4: "PROTOCOL", 5: "SRC_TOS", 6: "TCP_FLAGS",
    7: "L4_SRC_PORT", 8: "IPV4_SRC_ADDR", 9: "SRC_MASK", 10: "INPUT_SNMP", 11: "L4_DST_PORT",
    12: "IPV4_DST_ADDR", 13: "DST_MASK", 14: "OUTPUT_SNMP", 15: "IPV4_NEXT_HOP", 16: "SRC_AS",
    17: "DST_AS", 18: "BGP_IPV4_NEXT_HOP", 19: "MUL_DST_PKTS", 20: "MUL_DST_BYTES",
    21: "LAST_SWITCHED", 22: "FIRST_SWITCHED", 23: "OUT_BYTES", 24: "OUT_PKTS", 25: "MIN_PKT_LNGTH",
    26: "MAX_PKT_LNGTH", 27: "IPV6_SRC_ADDR", 28: "IPV6_DST_ADDR", 29: "IPV6_SRC_MASK",
    30: "IPV6_DST_MASK", 31: "IPV6_FLOW_LABEL", 32: "ICMP_TYPE", 33: "MUL_IGMP_TYPE",
    34: "SAMPLING_INTERVAL", 35: "SAMPLING_ALGORITHM", 36: "FLOW_ACTIVE_TIMEOUT",
    37: "FLOW_INACTIVE_TIMEOUT", 38: "ENGINE_TYPE", 39: "ENGINE_ID", 40: "TOTAL_BYTES_EXP",
    41: "TOTAL_PKTS_EXP", 42: "TOTAL_FLOWS_EXP", 44: "IPV4_SRC_PREFIX", 45: "IPV4_DST_PREFIX",
    46: "MPLS_TOP_LABEL_TYPE", 47: "MPLS_TOP_LABEL_IP_ADDR", 48: "FLOW_SAMPLER_ID",
    49: "FLOW_SAMPLER_MODE", 50: "FLOW_SAMPLER_RANDOM_INTERVAL", 52: "MIN_TTL", 53: "MAX_TTL",
    54: "IPV4_IDENT", 55: "DST_TOS", 56: "IN_SRC_MAC", 57: "OUT_DST_MAC", 58: "SRC_VLAN",
    59: "DST_VLAN", 60: "IP_PROTOCOL_VERSION", 61: "DIRECTION", 62: "IPV6_NEXT_HOP",
    63: "BGP_IPV6_NEXT_HOP", 64: "IPV6_OPTION_HEADERS", 70: "MPLS_LABEL_1", 71: "MPLS_LABEL_2",
    72: "MPLS_LABEL_3", 73: "MPLS_LABEL_4", 74: "MPLS_LABEL_5", 75: "MPLS_LABEL_6", 76: "MPLS_LABEL_7",
    77: "MPLS_LABEL_8", 78: "MPLS_LABEL_9", 79: "MPLS_LABEL_10", 80: "IN_DST_MAC", 81: "OUT_SRC_MAC",
    82: "IF_NAME", 83: "IF_DESC", 84: "SAMPLER_NAME", 85: "IN_PERMANENT_BYTES",
    86: "IN_PERMANENT_PKTS", 88: "FRAGMENT_OFFSET", 89: "FORWARDING_STATUS", 90: "MPLS_PAL_RD",
    91: "MPLS_PREFIX_LEN", 92: "SRC_TRAFFIC_INDEX", 93: "DST_TRAFFIC_INDEX",
    94: "APPLICATION_DESCRIPTION", 95: "APPLICATION_TAG", 96: "APPLICATION_NAME",
    98: "POST_IP_DIFF_SERV_CODE_POINT", 99: "REPLICATION_FACTOR", 102: "LAYER2_PACKET_SECTION_OFFSET",
    103: "LAYER2_PACKET_SECTION_SIZE", 104: "LAYER2_PACKET_SECTION_DATA",
}

# v9 types with no IPFIX id: Cisco ASA NSEL (NetFlow Security Event Logging) vendor range.
V9_VENDOR: Final[dict[int, tuple[str, str]]] = {
    33000: ("ingressAclId", OCT), 33001: ("egressAclId", OCT), 33002: ("fwExtEvent", U16),
    40000: ("aaaUsername", STR), 40001: ("xlateSourceIPv4Address", IP4),
    40002: ("xlateDestinationIPv4Address", IP4), 40003: ("xlateSourceTransportPort", U16),
    40004: ("xlateDestinationTransportPort", U16), 40005: ("fwEvent", U8),
}
# fmt: on

# RFC 3954 section 6.1: scope field types of v9 options templates (not IE ids).
V9_SCOPES: Final[dict[int, tuple[str, str]]] = {
    1: ("scopeSystem", OCT),
    2: ("scopeInterface", U32),
    3: ("scopeLineCard", U32),
    4: ("scopeCache", U32),
    5: ("scopeTemplate", U32),
}

REVERSE_PEN: Final = 29305  # RFC 5103 biflow: reverse counterpart of the IANA element

NAME_TO_ID: Final[dict[str, int]] = {name: ie for ie, (name, _) in IANA.items()}
NAME_TO_ID.update({name: ie for ie, name in V9_RFC3954_NAMES.items()})


def ipfix_ie(ie: int, pen: int = 0) -> tuple[str, str]:
    """Name and abstract type of an IPFIX field; unknown ones are named, never rejected."""
    if pen == 0:
        return IANA.get(ie) or (f"ipfixField{ie}", OCT)
    if pen == REVERSE_PEN and ie in IANA:
        name, kind = IANA[ie]
        return "reverse" + name[0].upper() + name[1:], kind
    return f"e{pen}f{ie}", OCT


def v9_field(field_type: int, *, scope: bool = False) -> tuple[str, str]:
    """Name and abstract type of a NetFlow v9 field (or options scope field)."""
    if scope and field_type in V9_SCOPES:
        return V9_SCOPES[field_type]
    return IANA.get(field_type) or V9_VENDOR.get(field_type) or (f"v9Field{field_type}", OCT)


def ie_id(name: str) -> int | None:
    """IANA id of an element name (IPFIX or RFC 3954 spelling), None when unknown."""
    return NAME_TO_ID.get(name)


_NTP_EPOCH = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


def render(kind: str, raw: bytes) -> Any:
    """A field value in JSON-friendly form: ints, address text, aa:bb MAC, strings, else hex.

    Values whose length does not fit their type (a vendor reusing an id) fall back to hex rather
    than being guessed at.
    """
    n = len(raw)
    if kind in INTEGER_TYPES and 0 < n <= 8:
        if kind in (USEC, NSEC) and n == 8:  # RFC 7011 6.1.9/6.1.10: NTP timestamp format
            secs, frac = int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big")
            scale = 1_000_000 if kind == USEC else 1_000_000_000
            return (secs - _NTP_EPOCH) * scale + ((frac * scale + (1 << 31)) >> 32)
        return int.from_bytes(raw, "big", signed=kind in SIGNED_TYPES)
    if kind == IP4 and n == 4:
        return str(ipaddress.IPv4Address(raw))
    if kind == IP6 and n == 16:
        return str(ipaddress.IPv6Address(raw))
    if kind == MAC and n == 6:
        return ":".join(f"{b:02x}" for b in raw)
    if kind == STR:
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if kind == BOOL and n == 1:
        return raw[0] == 1  # RFC 7011 6.1.5: 1 = true, 2 = false
    if kind == F64 and n in (4, 8):
        value = struct.unpack(">d" if n == 8 else ">f", raw)[0]
        return value if math.isfinite(value) else None
    return raw.hex()
