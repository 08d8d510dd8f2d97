// The whole deployment: one user-assigned identity used for everything, keyless storage,
// monitoring, the Flex Consumption function app, its role assignments and Graph permissions.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Azure region for every resource.')
param location string

@description('Most instances the app may scale to. Also bounds the load the app puts on Graph.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 10

@description('Instance memory for the Flex Consumption plan.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Graph application permissions granted to the identity (defaults cover the allow-listed operations).')
param graphAppRoles array = [
  'User.ReadWrite.All'
  'Group.ReadWrite.All'
  'LicenseAssignment.ReadWrite.All'
  'Team.Create'
  'Channel.Create'
  'Calendars.ReadWrite'
]

@description('NCRONTAB schedule (six fields, UTC) of the bulk user update pickup.')
param bulkSchedule string = '0 */15 * * * *'

@description('Grant the Graph permissions in this deployment (needs Privileged Role Administrator). Off: grant them by hand, see README.')
param grantGraphPermissions bool = true

@description('Graph root the app calls.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Sends per operation before it is recorded Failed.')
param maxAttempts int = 8

@description('Require Entra ID sign-in in front of the HTTP API (App Service authentication).')
param enableEntraAuth bool = false

@description('Client id of the app registration callers sign in to (when enableEntraAuth).')
param authClientId string = ''

@description('Audiences accepted in caller tokens (when enableEntraAuth), e.g. api://<client id>.')
param authAllowedAudiences array = []

@description('Client (application) ids of the apps allowed to call the API, comma-separated (when enableEntraAuth). Empty: any app of the tenant.')
param allowedCallerAppIds string = ''

@description('Object ids of the users and service principals allowed to call the API, comma-separated (when enableEntraAuth). Empty: any. App Service takes at most 500 characters.')
@maxLength(500)
param allowedCallerObjectIds string = ''

@description('Object ids of the systems that drop jobs on the provisioning queue: each may send messages to that queue and to nothing else.')
param producerPrincipalIds array = []

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var names = {
  provisioningQueue: 'provisioning-requests'
  poisonQueue: 'provisioning-requests-poison'
  workQueue: 'provisioning-work'
  workPoisonQueue: 'provisioning-work-poison'
  bulkQueue: 'provisioning-bulk'
  bulkPoisonQueue: 'provisioning-bulk-poison'
  pacingTable: 'GraphPacing'
  resultsTable: 'ProvisioningResults'
  bulkContainer: 'bulk-user-updates'
  deploymentContainer: 'app-package-${resourceToken}'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    queueNames: [
      names.provisioningQueue
      names.poisonQueue
      names.workQueue
      names.workPoisonQueue
      names.bulkQueue
      names.bulkPoisonQueue
    ]
    tableNames: [names.resultsTable, names.pacingTable]
    containerNames: [names.bulkContainer, names.deploymentContainer]
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module producers 'modules/producers.bicep' = if (!empty(producerPrincipalIds)) {
  name: 'producers'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    queueName: names.provisioningQueue
    principalIds: producerPrincipalIds
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: names.deploymentContainer
    appInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    provisioningQueue: names.provisioningQueue
    workQueue: names.workQueue
    bulkQueue: names.bulkQueue
    resultsTable: names.resultsTable
    pacingTable: names.pacingTable
    bulkContainer: names.bulkContainer
    bulkSchedule: bulkSchedule
    graphBaseUrl: graphBaseUrl
    maxAttempts: maxAttempts
    enableEntraAuth: enableEntraAuth
    authClientId: authClientId
    authAllowedAudiences: authAllowedAudiences
    allowedCallerAppIds: allowedCallerAppIds
    allowedCallerObjectIds: allowedCallerObjectIds
  }
  dependsOn: [roles]
}

module graphPermissions 'modules/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    appRoles: graphAppRoles
  }
}

output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output JOBS_URL string = 'https://${functionApp.outputs.defaultHostName}/api/jobs'
output IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
