import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { AddResourceRequest as _containerd_services_leases_v1_AddResourceRequest, AddResourceRequest__Output as _containerd_services_leases_v1_AddResourceRequest__Output } from './containerd/services/leases/v1/AddResourceRequest.js';
import type { CreateRequest as _containerd_services_leases_v1_CreateRequest, CreateRequest__Output as _containerd_services_leases_v1_CreateRequest__Output } from './containerd/services/leases/v1/CreateRequest.js';
import type { CreateResponse as _containerd_services_leases_v1_CreateResponse, CreateResponse__Output as _containerd_services_leases_v1_CreateResponse__Output } from './containerd/services/leases/v1/CreateResponse.js';
import type { DeleteRequest as _containerd_services_leases_v1_DeleteRequest, DeleteRequest__Output as _containerd_services_leases_v1_DeleteRequest__Output } from './containerd/services/leases/v1/DeleteRequest.js';
import type { DeleteResourceRequest as _containerd_services_leases_v1_DeleteResourceRequest, DeleteResourceRequest__Output as _containerd_services_leases_v1_DeleteResourceRequest__Output } from './containerd/services/leases/v1/DeleteResourceRequest.js';
import type { Lease as _containerd_services_leases_v1_Lease, Lease__Output as _containerd_services_leases_v1_Lease__Output } from './containerd/services/leases/v1/Lease.js';
import type { LeasesClient as _containerd_services_leases_v1_LeasesClient, LeasesDefinition as _containerd_services_leases_v1_LeasesDefinition } from './containerd/services/leases/v1/Leases.js';
import type { ListRequest as _containerd_services_leases_v1_ListRequest, ListRequest__Output as _containerd_services_leases_v1_ListRequest__Output } from './containerd/services/leases/v1/ListRequest.js';
import type { ListResourcesRequest as _containerd_services_leases_v1_ListResourcesRequest, ListResourcesRequest__Output as _containerd_services_leases_v1_ListResourcesRequest__Output } from './containerd/services/leases/v1/ListResourcesRequest.js';
import type { ListResourcesResponse as _containerd_services_leases_v1_ListResourcesResponse, ListResourcesResponse__Output as _containerd_services_leases_v1_ListResourcesResponse__Output } from './containerd/services/leases/v1/ListResourcesResponse.js';
import type { ListResponse as _containerd_services_leases_v1_ListResponse, ListResponse__Output as _containerd_services_leases_v1_ListResponse__Output } from './containerd/services/leases/v1/ListResponse.js';
import type { Resource as _containerd_services_leases_v1_Resource, Resource__Output as _containerd_services_leases_v1_Resource__Output } from './containerd/services/leases/v1/Resource.js';
import type { DescriptorProto as _google_protobuf_DescriptorProto, DescriptorProto__Output as _google_protobuf_DescriptorProto__Output } from './google/protobuf/DescriptorProto.js';
import type { Empty as _google_protobuf_Empty, Empty__Output as _google_protobuf_Empty__Output } from './google/protobuf/Empty.js';
import type { EnumDescriptorProto as _google_protobuf_EnumDescriptorProto, EnumDescriptorProto__Output as _google_protobuf_EnumDescriptorProto__Output } from './google/protobuf/EnumDescriptorProto.js';
import type { EnumOptions as _google_protobuf_EnumOptions, EnumOptions__Output as _google_protobuf_EnumOptions__Output } from './google/protobuf/EnumOptions.js';
import type { EnumValueDescriptorProto as _google_protobuf_EnumValueDescriptorProto, EnumValueDescriptorProto__Output as _google_protobuf_EnumValueDescriptorProto__Output } from './google/protobuf/EnumValueDescriptorProto.js';
import type { EnumValueOptions as _google_protobuf_EnumValueOptions, EnumValueOptions__Output as _google_protobuf_EnumValueOptions__Output } from './google/protobuf/EnumValueOptions.js';
import type { ExtensionRangeOptions as _google_protobuf_ExtensionRangeOptions, ExtensionRangeOptions__Output as _google_protobuf_ExtensionRangeOptions__Output } from './google/protobuf/ExtensionRangeOptions.js';
import type { FeatureSet as _google_protobuf_FeatureSet, FeatureSet__Output as _google_protobuf_FeatureSet__Output } from './google/protobuf/FeatureSet.js';
import type { FeatureSetDefaults as _google_protobuf_FeatureSetDefaults, FeatureSetDefaults__Output as _google_protobuf_FeatureSetDefaults__Output } from './google/protobuf/FeatureSetDefaults.js';
import type { FieldDescriptorProto as _google_protobuf_FieldDescriptorProto, FieldDescriptorProto__Output as _google_protobuf_FieldDescriptorProto__Output } from './google/protobuf/FieldDescriptorProto.js';
import type { FieldOptions as _google_protobuf_FieldOptions, FieldOptions__Output as _google_protobuf_FieldOptions__Output } from './google/protobuf/FieldOptions.js';
import type { FileDescriptorProto as _google_protobuf_FileDescriptorProto, FileDescriptorProto__Output as _google_protobuf_FileDescriptorProto__Output } from './google/protobuf/FileDescriptorProto.js';
import type { FileDescriptorSet as _google_protobuf_FileDescriptorSet, FileDescriptorSet__Output as _google_protobuf_FileDescriptorSet__Output } from './google/protobuf/FileDescriptorSet.js';
import type { FileOptions as _google_protobuf_FileOptions, FileOptions__Output as _google_protobuf_FileOptions__Output } from './google/protobuf/FileOptions.js';
import type { GeneratedCodeInfo as _google_protobuf_GeneratedCodeInfo, GeneratedCodeInfo__Output as _google_protobuf_GeneratedCodeInfo__Output } from './google/protobuf/GeneratedCodeInfo.js';
import type { MessageOptions as _google_protobuf_MessageOptions, MessageOptions__Output as _google_protobuf_MessageOptions__Output } from './google/protobuf/MessageOptions.js';
import type { MethodDescriptorProto as _google_protobuf_MethodDescriptorProto, MethodDescriptorProto__Output as _google_protobuf_MethodDescriptorProto__Output } from './google/protobuf/MethodDescriptorProto.js';
import type { MethodOptions as _google_protobuf_MethodOptions, MethodOptions__Output as _google_protobuf_MethodOptions__Output } from './google/protobuf/MethodOptions.js';
import type { OneofDescriptorProto as _google_protobuf_OneofDescriptorProto, OneofDescriptorProto__Output as _google_protobuf_OneofDescriptorProto__Output } from './google/protobuf/OneofDescriptorProto.js';
import type { OneofOptions as _google_protobuf_OneofOptions, OneofOptions__Output as _google_protobuf_OneofOptions__Output } from './google/protobuf/OneofOptions.js';
import type { ServiceDescriptorProto as _google_protobuf_ServiceDescriptorProto, ServiceDescriptorProto__Output as _google_protobuf_ServiceDescriptorProto__Output } from './google/protobuf/ServiceDescriptorProto.js';
import type { ServiceOptions as _google_protobuf_ServiceOptions, ServiceOptions__Output as _google_protobuf_ServiceOptions__Output } from './google/protobuf/ServiceOptions.js';
import type { SourceCodeInfo as _google_protobuf_SourceCodeInfo, SourceCodeInfo__Output as _google_protobuf_SourceCodeInfo__Output } from './google/protobuf/SourceCodeInfo.js';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from './google/protobuf/Timestamp.js';
import type { UninterpretedOption as _google_protobuf_UninterpretedOption, UninterpretedOption__Output as _google_protobuf_UninterpretedOption__Output } from './google/protobuf/UninterpretedOption.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  containerd: {
    services: {
      leases: {
        v1: {
          AddResourceRequest: MessageTypeDefinition<_containerd_services_leases_v1_AddResourceRequest, _containerd_services_leases_v1_AddResourceRequest__Output>
          CreateRequest: MessageTypeDefinition<_containerd_services_leases_v1_CreateRequest, _containerd_services_leases_v1_CreateRequest__Output>
          CreateResponse: MessageTypeDefinition<_containerd_services_leases_v1_CreateResponse, _containerd_services_leases_v1_CreateResponse__Output>
          DeleteRequest: MessageTypeDefinition<_containerd_services_leases_v1_DeleteRequest, _containerd_services_leases_v1_DeleteRequest__Output>
          DeleteResourceRequest: MessageTypeDefinition<_containerd_services_leases_v1_DeleteResourceRequest, _containerd_services_leases_v1_DeleteResourceRequest__Output>
          Lease: MessageTypeDefinition<_containerd_services_leases_v1_Lease, _containerd_services_leases_v1_Lease__Output>
          Leases: SubtypeConstructor<typeof grpc.Client, _containerd_services_leases_v1_LeasesClient> & { service: _containerd_services_leases_v1_LeasesDefinition }
          ListRequest: MessageTypeDefinition<_containerd_services_leases_v1_ListRequest, _containerd_services_leases_v1_ListRequest__Output>
          ListResourcesRequest: MessageTypeDefinition<_containerd_services_leases_v1_ListResourcesRequest, _containerd_services_leases_v1_ListResourcesRequest__Output>
          ListResourcesResponse: MessageTypeDefinition<_containerd_services_leases_v1_ListResourcesResponse, _containerd_services_leases_v1_ListResourcesResponse__Output>
          ListResponse: MessageTypeDefinition<_containerd_services_leases_v1_ListResponse, _containerd_services_leases_v1_ListResponse__Output>
          Resource: MessageTypeDefinition<_containerd_services_leases_v1_Resource, _containerd_services_leases_v1_Resource__Output>
        }
      }
    }
  }
  gogoproto: {
  }
  google: {
    protobuf: {
      DescriptorProto: MessageTypeDefinition<_google_protobuf_DescriptorProto, _google_protobuf_DescriptorProto__Output>
      Edition: EnumTypeDefinition
      Empty: MessageTypeDefinition<_google_protobuf_Empty, _google_protobuf_Empty__Output>
      EnumDescriptorProto: MessageTypeDefinition<_google_protobuf_EnumDescriptorProto, _google_protobuf_EnumDescriptorProto__Output>
      EnumOptions: MessageTypeDefinition<_google_protobuf_EnumOptions, _google_protobuf_EnumOptions__Output>
      EnumValueDescriptorProto: MessageTypeDefinition<_google_protobuf_EnumValueDescriptorProto, _google_protobuf_EnumValueDescriptorProto__Output>
      EnumValueOptions: MessageTypeDefinition<_google_protobuf_EnumValueOptions, _google_protobuf_EnumValueOptions__Output>
      ExtensionRangeOptions: MessageTypeDefinition<_google_protobuf_ExtensionRangeOptions, _google_protobuf_ExtensionRangeOptions__Output>
      FeatureSet: MessageTypeDefinition<_google_protobuf_FeatureSet, _google_protobuf_FeatureSet__Output>
      FeatureSetDefaults: MessageTypeDefinition<_google_protobuf_FeatureSetDefaults, _google_protobuf_FeatureSetDefaults__Output>
      FieldDescriptorProto: MessageTypeDefinition<_google_protobuf_FieldDescriptorProto, _google_protobuf_FieldDescriptorProto__Output>
      FieldOptions: MessageTypeDefinition<_google_protobuf_FieldOptions, _google_protobuf_FieldOptions__Output>
      FileDescriptorProto: MessageTypeDefinition<_google_protobuf_FileDescriptorProto, _google_protobuf_FileDescriptorProto__Output>
      FileDescriptorSet: MessageTypeDefinition<_google_protobuf_FileDescriptorSet, _google_protobuf_FileDescriptorSet__Output>
      FileOptions: MessageTypeDefinition<_google_protobuf_FileOptions, _google_protobuf_FileOptions__Output>
      GeneratedCodeInfo: MessageTypeDefinition<_google_protobuf_GeneratedCodeInfo, _google_protobuf_GeneratedCodeInfo__Output>
      MessageOptions: MessageTypeDefinition<_google_protobuf_MessageOptions, _google_protobuf_MessageOptions__Output>
      MethodDescriptorProto: MessageTypeDefinition<_google_protobuf_MethodDescriptorProto, _google_protobuf_MethodDescriptorProto__Output>
      MethodOptions: MessageTypeDefinition<_google_protobuf_MethodOptions, _google_protobuf_MethodOptions__Output>
      OneofDescriptorProto: MessageTypeDefinition<_google_protobuf_OneofDescriptorProto, _google_protobuf_OneofDescriptorProto__Output>
      OneofOptions: MessageTypeDefinition<_google_protobuf_OneofOptions, _google_protobuf_OneofOptions__Output>
      ServiceDescriptorProto: MessageTypeDefinition<_google_protobuf_ServiceDescriptorProto, _google_protobuf_ServiceDescriptorProto__Output>
      ServiceOptions: MessageTypeDefinition<_google_protobuf_ServiceOptions, _google_protobuf_ServiceOptions__Output>
      SourceCodeInfo: MessageTypeDefinition<_google_protobuf_SourceCodeInfo, _google_protobuf_SourceCodeInfo__Output>
      SymbolVisibility: EnumTypeDefinition
      Timestamp: MessageTypeDefinition<_google_protobuf_Timestamp, _google_protobuf_Timestamp__Output>
      UninterpretedOption: MessageTypeDefinition<_google_protobuf_UninterpretedOption, _google_protobuf_UninterpretedOption__Output>
    }
  }
}

