// The whole deployment: one user-assigned identity used for everything, keyless storage,
// monitoring, the Flex Consumption function app, its role assignments, and the data roles of
// the people who operate it. The identity's Microsoft Graph permissions are granted after
// provisioning by infra/hooks/grant_graph_permissions.py (azd postprovision hook).
//
// Every compound expression is parenthesised on its left (`(a && b) ? x : y`): the offline
// parser the checks use (pycep-parser) gives every operator the same precedence, so
// `a && b ? x : y` would be read as `a && (b ? x : y)` (tests/unit/test_infra.py checks this).
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names and tags every resource.')
param environmentName string

// Regions that offer the Flex Consumption plan, as `az functionapp list-flexconsumption-locations`
// lists them (here: as Microsoft's Flex Consumption azd quickstart templates list them, early 2026;
// the early-access region eastus2euap left out). Flex is not offered everywhere, and a region
// outside this list fails the deployment halfway. To add a region: check it with that command
// (`--zone-redundant=true` for ZONE_REDUNDANT) and add its name here.
@minLength(1)
@description('Azure region for every resource; only regions where Flex Consumption is offered.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

// Flex Consumption refuses a maximum under 40 in most regions, and the cap applies to each
// function group (HTTP, each queue trigger, the timer) on its own, so it cannot bound the load on
// Graph: the app keeps the whole fleet inside Graph's budget itself (GRAPH_WRITES_PER_SECOND).
@description('Most instances each function group may scale to (Flex Consumption: 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Instance memory for the Flex Consumption plan.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Spread the app and its storage over availability zones. Flex then keeps at least two always-ready instances per function group, billed while idle; off by default for that cost.')
param zoneRedundant bool = false

@description('NCRONTAB schedule (six fields, UTC) of the bulk user update pickup.')
param bulkSchedule string = '0 */15 * * * *'

@description('Graph root the app calls.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Sends per operation before it is recorded Failed.')
param maxAttempts int = 8

@description('Hosts job results may be POSTed to (callbackUrl, the webhook action), comma-separated: default (Power Automate and Logic Apps callback hosts), host names, *.suffix patterns.')
param callbackAllowedHosts string = 'default'

@description('Require Entra ID sign-in in front of the HTTP API (App Service authentication).')
param enableEntraAuth bool = false

@description('Client id of the app registration callers sign in to (required with enableEntraAuth).')
param authClientId string = ''

@description('Token audiences the API accepts, comma-separated (with enableEntraAuth). Empty: api://<authClientId> and the client id itself.')
param authAllowedAudiences string = ''

@description('Client (application) ids of the apps allowed to call the API, comma-separated (with enableEntraAuth; this or allowedCallerObjectIds is required).')
param allowedCallerAppIds string = ''

@description('Object ids of the users and service principals allowed to call the API, comma-separated (with enableEntraAuth). App Service takes at most 500 characters.')
@maxLength(500)
param allowedCallerObjectIds string = ''

@description('Object ids of the systems that drop jobs on the provisioning queue, comma-separated: each may send messages to that queue and to nothing else.')
param producerPrincipalIds string = ''

@description('Object id of the person or pipeline running azd (azd fills it in); gets the operator data roles unless grantDeployerOperatorRoles is false.')
param deployerPrincipalId string = ''

@description('Give the deployer (deployerPrincipalId) the operator data roles.')
param grantDeployerOperatorRoles bool = true

@description('Object ids of further users or groups who operate the app, comma-separated: they get the operator data roles.')
param operatorPrincipalIds string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var names = {
  provisioningQueue: 'provisioning-requests'
  poisonQueue: 'provisioning-requests-poison'
  workQueue: 'provisioning-work'
  workPoisonQueue: 'provisioning-work-poison'
  bulkQueue: 'provisioning-bulk'
  bulkPoisonQueue: 'provisioning-bulk-poison'
  callbackQueue: 'provisioning-callbacks'
  callbackPoisonQueue: 'provisioning-callbacks-poison'
  pacingTable: 'GraphPacing'
  resultsTable: 'ProvisioningResults'
  subscriptionsTable: 'ProvisioningSubscriptions'
  bulkContainer: 'bulk-user-updates'
  deploymentContainer: 'app-package-${resourceToken}'
}
var producers = filter(map(split(producerPrincipalIds, ','), id => trim(id)), id => !empty(id))
var namedOperators = filter(map(split(operatorPrincipalIds, ','), id => trim(id)), id => !empty(id))
var deployerOperator = (grantDeployerOperatorRoles && !empty(deployerPrincipalId)) ? [deployerPrincipalId] : []
// union() drops repeats, so a deployer who is also named once gets each role once.
var operators = union(deployerOperator, namedOperators)

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
    zoneRedundant: zoneRedundant
    queueNames: [
      names.provisioningQueue
      names.poisonQueue
      names.workQueue
      names.workPoisonQueue
      names.bulkQueue
      names.bulkPoisonQueue
      names.callbackQueue
      names.callbackPoisonQueue
    ]
    tableNames: [names.resultsTable, names.pacingTable, names.subscriptionsTable]
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

// Operators' view of the app's telemetry in the portal (README "Operating").
module operationsWorkbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    appInsightsName: monitoring.outputs.appInsightsName
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

module producerRoles 'modules/producers.bicep' = if (!empty(producers)) {
  name: 'producers'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    queueName: names.provisioningQueue
    principalIds: producers
  }
}

module operatorRoles 'modules/operators.bicep' = if (!empty(operators)) {
  name: 'operators'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    bulkContainerName: names.bulkContainer
    resultsTableName: names.resultsTable
    pacingTableName: names.pacingTable
    appInsightsName: monitoring.outputs.appInsightsName
    workbookName: operationsWorkbook.outputs.name
    principalIds: operators
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
    zoneRedundant: zoneRedundant
    provisioningQueue: names.provisioningQueue
    workQueue: names.workQueue
    bulkQueue: names.bulkQueue
    callbackQueue: names.callbackQueue
    callbackAllowedHosts: callbackAllowedHosts
    resultsTable: names.resultsTable
    pacingTable: names.pacingTable
    subscriptionsTable: names.subscriptionsTable
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

output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output JOBS_URL string = 'https://${functionApp.outputs.defaultHostName}/api/jobs'
output IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output GRAPH_BASE_URL string = graphBaseUrl
