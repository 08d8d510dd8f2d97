// Keyless storage: shared keys off, TLS 1.2, HTTPS only, no public blob access.
param name string
param location string
param tags object
@description('Zone-redundant storage (ZRS), to match a zone-redundant function app.')
param zoneRedundant bool = false
param queueNames array
param tableNames array
param containerNames array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59: Flex Consumption without VNet integration reaches storage over its public endpoint; every request needs an Entra ID identity with a data role (shared keys off: no account key, no key-signed SAS)
  // checkov:skip=CKV_AZURE_35: same reason: a deny-by-default network rule would lock the function host out unless the app is VNet-integrated
  // checkov:skip=CKV_AZURE_206: no geo-replication: the app runs in one region and cannot fail over, and its queues and tables serve only that app; ZRS comes with zoneRedundant
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: zoneRedundant ? 'Standard_ZRS' : 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    isLocalUserEnabled: false
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in containerNames: {
  parent: blobs
  name: container
  properties: { publicAccess: 'None' }
}]

resource queues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queues
  name: queueName
}]

resource tables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tables
  name: tableName
}]

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
