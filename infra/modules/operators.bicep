// The roles a person needs to operate the app (README "Roles for people"), and no more:
// drop CSV files in the bulk container and run the operator CLI (python -m batching: submit,
// status, failures, poison list/replay, bulk run). Shared keys are off, so without these roles
// nobody but the app's identity can reach the data.
//
// - Blob: Storage Blob Data Contributor on the bulk container only. Not on the account: the
//   deployment package container holds the code the app runs with its Graph permissions.
// - Queue: Storage Queue Data Contributor on the account: the CLI sends to the provisioning,
//   work and bulk queues, reads and replays their poison queues, and creates any that are missing.
// - Table: Storage Table Data Contributor on the results and pacing tables only: the CLI reads
//   and writes them. Not on the account: the subscriptions table holds the trigger's callback
//   URLs, secrets that start flows, which only the app's identity may read.
// - Monitoring: Monitoring Reader on the Application Insights component and the operations
//   workbook: read the app's spans and metrics, run the README's KQL, open the workbook.
param storageAccountName string
param bulkContainerName string
param resultsTableName string
param pacingTableName string
param appInsightsName string
param workbookName string

@description('Object ids of the users, groups or service principals who operate the app.')
param principalIds array

var roles = {
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringReader: '43d0d8ad-25c7-4714-9337-8ba259a9fe05'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource bulkContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: bulkContainerName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource resultsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: resultsTableName
}

resource pacingTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: pacingTableName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' existing = {
  name: workbookName
}

// No principalType: these are existing people, groups or pipelines of any kind.
resource blobContributors 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(bulkContainer.id, principalId, roles.blobDataContributor)
  scope: bulkContainer
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}]

resource queueContributors 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(account.id, principalId, roles.queueDataContributor)
  scope: account
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor)
  }
}]

resource resultsTableContributors 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(resultsTable.id, principalId, roles.tableDataContributor)
  scope: resultsTable
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}]

resource pacingTableContributors 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(pacingTable.id, principalId, roles.tableDataContributor)
  scope: pacingTable
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}]

resource telemetryReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(appInsights.id, principalId, roles.monitoringReader)
  scope: appInsights
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
  }
}]

resource workbookReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(workbook.id, principalId, roles.monitoringReader)
  scope: workbook
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
  }
}]
